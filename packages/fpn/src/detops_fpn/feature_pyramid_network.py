"""FeaturePyramidNetwork and its extra blocks, as in torchvision.ops.feature_pyramid_network
(same constructor arguments, initialisation, parameter names and state_dict keys), with
the top-down "upsample + add" done by the fused native op."""

from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from .ops import fpn_upsample_add


class _ConvNorm(nn.Sequential):
    """Conv2d followed by an optional norm layer: the layout (and so the state_dict keys
    ``<i>.0.weight``, ``<i>.1.*``) of torchvision's Conv2dNormActivation without activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, norm_layer):
        layers: List[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, 1, padding, bias=norm_layer is None)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        super().__init__(*layers)
        self.out_channels = out_channels


class ExtraFPNBlock(nn.Module):
    """Base class of the blocks that extend the FPN output.

    ``forward(results, x, names)`` receives the FPN outputs, the original feature maps and
    their names, and returns the extended outputs and names; the base class returns them
    unchanged. Subclasses take these arguments:

    Args:
        results (List[Tensor]): the FPN outputs, highest resolution first.
        x (List[Tensor]): the feature maps given to the FPN.
        names (List[str]): the names of ``results``.

    Returns:
        Tuple[List[Tensor], List[str]]: the extended outputs and names.

    Devices, determinism, ONNX: an extra block is plain PyTorch: it runs on any device
    (CPU, CUDA, ...) and floating dtype torch supports for its layers, with torch's own
    determinism rules, and exports to ONNX through torch's own exporter.
    """

    def forward(self, results: List[Tensor], x: List[Tensor], names: List[str]) -> Tuple[List[Tensor], List[str]]:
        return results, names


class LastLevelMaxPool(ExtraFPNBlock):
    """Adds "pool": the last FPN output subsampled by 2 (max_pool2d, kernel 1, stride 2).

    Args: none to the constructor; ``forward(x, y, names)`` takes :class:`ExtraFPNBlock`'s
    arguments (FPN outputs, backbone maps, names) and returns them with ``pool``
    ([N, C, ceil(H/2), ceil(W/2)] of the last output) appended.

    Devices, determinism, ONNX: a strided selection in plain PyTorch: it runs on any device
    (CPU, CUDA, ...) and floating dtype torch's max_pool2d supports, with torch's own
    determinism rules (the forward is a repeatable selection), and exports to ONNX through
    torch's own exporter.
    """

    def forward(self, x: List[Tensor], y: List[Tensor], names: List[str]) -> Tuple[List[Tensor], List[str]]:
        names.append("pool")
        x.append(F.max_pool2d(x[-1], kernel_size=1, stride=2, padding=0))
        return x, names


class LastLevelP6P7(ExtraFPNBlock):
    """Adds "p6" and "p7" (RetinaNet): stride-2 3x3 convs on P5 when in_channels ==
    out_channels, else on C5, with a ReLU between them.

    Args:
        in_channels (int): channels of the map P6 is computed from.
        out_channels (int): channels of P6 and P7.

    ``forward(p, c, names)`` takes :class:`ExtraFPNBlock`'s arguments (FPN outputs,
    backbone maps, names) and returns them with ``p6`` ([N, out_channels, ceil(H/2),
    ceil(W/2)] of its source, in the convolutions' floating dtype) and ``p7`` appended.

    Devices, determinism, ONNX: plain PyTorch layers, so
    they run on any device torch supports, with torch's own determinism rules for
    convolutions (see ``torch.use_deterministic_algorithms``; the default CUDA kernels are
    not guaranteed bitwise repeatable), and export to ONNX through torch's own exporter.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            nn.init.kaiming_uniform_(module.weight, a=1)
            nn.init.constant_(module.bias, 0)
        self.use_P5 = in_channels == out_channels

    def forward(self, p: List[Tensor], c: List[Tensor], names: List[str]) -> Tuple[List[Tensor], List[str]]:
        source = p[-1] if self.use_P5 else c[-1]
        p6 = self.p6(source)
        p7 = self.p7(F.relu(p6))
        p.extend([p6, p7])
        names.extend(["p6", "p7"])
        return p, names


class FeaturePyramidNetwork(nn.Module):
    """Feature Pyramid Network (Lin et al., 2017) over feature maps given in increasing
    depth order.

    Args:
        in_channels_list (list[int]): channels of each input feature map.
        out_channels (int): channels of every FPN output.
        extra_blocks (ExtraFPNBlock, optional): extra outputs (e.g. LastLevelMaxPool).
        norm_layer (callable, optional): norm layer after each conv (default: none).

    ``forward`` takes an ordered dict of feature maps and returns an ordered dict of FPN
    outputs with the same keys (plus the extra blocks' ones), highest resolution first.
    Each output is Tensor[N, out_channels, H_i, W_i] for an input Tensor[N, C_i, H_i, W_i],
    in the convolutions' dtype (any floating dtype torch's conv2d takes on the device).

    Devices, determinism, ONNX: the convolutions are torch's (any device, torch's own
    determinism rules); each top-down step is :func:`fpn_upsample_add`, CPU and CUDA
    kernels whose forward and backward are repeatable (bitwise identical on every run).
    Exports to ONNX with that step as ``Gather`` + ``Gather`` + ``Add`` (bitwise as eager)
    and the convolutions through torch's own exporter.
    """

    _version = 2

    def __init__(
        self,
        in_channels_list: List[int],
        out_channels: int,
        extra_blocks: Optional[ExtraFPNBlock] = None,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ):
        super().__init__()
        self.inner_blocks = nn.ModuleList()
        self.layer_blocks = nn.ModuleList()
        for in_channels in in_channels_list:
            if in_channels == 0:
                raise ValueError("in_channels=0 is currently not supported")
            self.inner_blocks.append(_ConvNorm(in_channels, out_channels, 1, 0, norm_layer))
            self.layer_blocks.append(_ConvNorm(out_channels, out_channels, 3, 1, norm_layer))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        if extra_blocks is not None and not isinstance(extra_blocks, ExtraFPNBlock):
            raise TypeError(f"extra_blocks should be of type ExtraFPNBlock not {type(extra_blocks)}")
        self.extra_blocks = extra_blocks

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        # Checkpoints older than version 2 had the convs directly at "<block>.<i>.weight".
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            for block in ("inner_blocks", "layer_blocks"):
                for i in range(len(self.inner_blocks)):
                    for kind in ("weight", "bias"):
                        old = f"{prefix}{block}.{i}.{kind}"
                        if old in state_dict:
                            state_dict[f"{prefix}{block}.{i}.0.{kind}"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)

    # TorchScript cannot index a ModuleList with a variable: select by enumeration.
    def get_result_from_inner_blocks(self, x: Tensor, idx: int) -> Tensor:
        idx = idx + len(self.inner_blocks) if idx < 0 else idx
        out = x
        for i, module in enumerate(self.inner_blocks):
            if i == idx:
                out = module(x)
        return out

    def get_result_from_layer_blocks(self, x: Tensor, idx: int) -> Tensor:
        idx = idx + len(self.layer_blocks) if idx < 0 else idx
        out = x
        for i, module in enumerate(self.layer_blocks):
            if i == idx:
                out = module(x)
        return out

    def forward(self, x: Dict[str, Tensor]) -> Dict[str, Tensor]:
        names = list(x.keys())
        features = list(x.values())
        last_inner = self.get_result_from_inner_blocks(features[-1], -1)
        results = [self.get_result_from_layer_blocks(last_inner, -1)]
        for idx in range(len(features) - 2, -1, -1):
            lateral = self.get_result_from_inner_blocks(features[idx], idx)
            last_inner = fpn_upsample_add(last_inner, lateral)
            results.insert(0, self.get_result_from_layer_blocks(last_inner, idx))
        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, features, names)
        return OrderedDict([(k, v) for k, v in zip(names, results)])
