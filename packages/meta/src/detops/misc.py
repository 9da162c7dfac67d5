"""torchvision.ops.misc names: the small building blocks of torchvision's models, in plain
PyTorch (no native op: each is a few standard torch calls).

The modules are laid out as torchvision 0.29.1 lays them out (the same submodule names and
order, the same buffers), so that state_dicts move between the two unchanged and the same
seed initialises the same weights; FrozenBatchNorm2d computes with torchvision's order of
operations, so that its results are bitwise equal.
"""

import warnings
from collections.abc import Sequence
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor

# torchvision.ops.misc re-exports it; models import it from there.
interpolate = torch.nn.functional.interpolate


class FrozenBatchNorm2d(torch.nn.Module):
    """BatchNorm2d whose statistics and affine parameters are constants (buffers, not
    parameters): ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per
    channel of an input ``(N, C, H, W)``.

    Args:
        num_features (int): the number of channels ``C``.
        eps (float): added to the variance before the square root. Default: 1e-5.

    A state_dict of a trained ``BatchNorm2d`` loads into it: its ``num_batches_tracked``
    entry, which this module has no use for, is dropped.

    Shapes: ``forward(x)`` takes x Tensor[N, C, H, W] and returns a Tensor of that shape. The buffers are
    created in the default dtype (float32); ``.to()`` moves and casts them as usual.

    Devices, determinism, ONNX: plain PyTorch element-wise arithmetic: it runs on any
    device torch supports, its results are repeatable (bitwise identical on every run),
    and it exports to ONNX through torch's own exporter like any torch code.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), fill))

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: List[str],
        unexpected_keys: List[str],
        error_msgs: List[str],
    ):
        # BatchNorm2d's counter would otherwise be an unexpected key under strict loading.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        # The per-channel scale and shift are folded first (C values), then applied to x in
        # one multiply-add; torchvision folds in the same order, which keeps results equal.
        shape = [1, -1, 1, 1]
        scale = self.weight.reshape(shape) * (self.running_var.reshape(shape) + self.eps).rsqrt()
        shift = self.bias.reshape(shape) - self.running_mean.reshape(shape) * scale
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _per_dim(value: Union[int, Sequence[int]], n: int) -> Tuple[int, ...]:
    return tuple(value) if isinstance(value, Sequence) else (value,) * n


def _same_padding(kernel_size, dilation) -> Union[int, Tuple[int, ...]]:
    # The padding that keeps the spatial size at stride 1 (odd kernels): half the dilated
    # kernel's extent on each side.
    if isinstance(kernel_size, int) and isinstance(dilation, int):
        return (kernel_size - 1) // 2 * dilation
    n = len(kernel_size) if isinstance(kernel_size, Sequence) else len(dilation)
    kernel_size, dilation = _per_dim(kernel_size, n), _per_dim(dilation, n)
    return tuple((k - 1) // 2 * d for k, d in zip(kernel_size, dilation))


class ConvNormActivation(torch.nn.Sequential):
    """Convolution, then an optional normalization, then an optional activation, as one
    ``Sequential`` (children ``0``, ``1``, ``2``, the absent ones left out). The base of
    :class:`Conv2dNormActivation` and :class:`Conv3dNormActivation`; use those (built
    directly, it warns as torchvision's does)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Tuple[int, ...]] = 3,
        stride: Union[int, Tuple[int, ...]] = 1,
        padding: Optional[Union[int, Tuple[int, ...], str]] = None,
        groups: int = 1,
        norm_layer: Optional[Callable[..., torch.nn.Module]] = torch.nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., torch.nn.Module]] = torch.nn.ReLU,
        dilation: Union[int, Tuple[int, ...]] = 1,
        inplace: Optional[bool] = True,
        bias: Optional[bool] = None,
        conv_layer: Callable[..., torch.nn.Module] = torch.nn.Conv2d,
    ) -> None:
        if padding is None:
            padding = _same_padding(kernel_size, dilation)
            if not isinstance(padding, int):
                # the tuples the padding was derived from are what the convolution gets
                n = len(padding)
                kernel_size, dilation = _per_dim(kernel_size, n), _per_dim(dilation, n)
        if bias is None:
            bias = norm_layer is None  # a normalization right after makes a bias redundant
        # Built in this order (convolution first) so that a seed initialises the same weights.
        conv = conv_layer(
            in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=bias
        )
        layers = [conv]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer() if inplace is None else activation_layer(inplace=inplace))
        super().__init__(*layers)
        self.out_channels = out_channels
        if type(self) is ConvNormActivation:
            warnings.warn(
                "ConvNormActivation is a base class: use Conv2dNormActivation or Conv3dNormActivation instead.",
                stacklevel=2,
            )


class Conv2dNormActivation(ConvNormActivation):
    """``Conv2d`` -> ``norm_layer`` -> ``activation_layer`` (see :class:`ConvNormActivation`).

    Args:
        in_channels (int), out_channels (int): the convolution's channels.
        kernel_size, stride, dilation (int or (int, int)): the convolution's; defaults 3, 1, 1.
        padding (int, tuple or str, optional): None (default) pads ``(kernel_size - 1) // 2
            * dilation`` on each side.
        groups (int): the convolution's groups. Default: 1.
        norm_layer (callable, optional): built as ``norm_layer(out_channels)``; None leaves
            it out. Default: ``torch.nn.BatchNorm2d``.
        activation_layer (callable, optional): built as ``activation_layer(inplace=inplace)``
            (``activation_layer()`` when inplace is None); None leaves it out. Default:
            ``torch.nn.ReLU``.
        inplace (bool, optional): passed to the activation. Default: True.
        bias (bool, optional): the convolution's bias; None (default) means ``norm_layer is None``.

    Shapes: Tensor[N, in_channels, H, W] to Tensor[N, out_channels, H_out, W_out], the
    sizes those of ``torch.nn.Conv2d`` with these settings.

    Devices, determinism, ONNX: plain PyTorch (no native op): it runs on any device and
    dtype its torch layers support, with torch's own determinism rules (e.g. for cuDNN convolutions on CUDA under
    ``torch.use_deterministic_algorithms``), and
    exports to ONNX through torch's own exporter like any torch code.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Tuple[int, int]] = 3,
        stride: Union[int, Tuple[int, int]] = 1,
        padding: Optional[Union[int, Tuple[int, int], str]] = None,
        groups: int = 1,
        norm_layer: Optional[Callable[..., torch.nn.Module]] = torch.nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., torch.nn.Module]] = torch.nn.ReLU,
        dilation: Union[int, Tuple[int, int]] = 1,
        inplace: Optional[bool] = True,
        bias: Optional[bool] = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            groups,
            norm_layer,
            activation_layer,
            dilation,
            inplace,
            bias,
            torch.nn.Conv2d,
        )


class Conv3dNormActivation(ConvNormActivation):
    """``Conv3d`` -> ``norm_layer`` -> ``activation_layer``: as :class:`Conv2dNormActivation`
    with three spatial dimensions and ``torch.nn.BatchNorm3d`` as the default norm_layer.

    Args:
        in_channels, out_channels, groups, activation_layer, inplace, bias: as in
            :class:`Conv2dNormActivation`.
        kernel_size, stride, dilation (int or (int, int, int)): the convolution's; defaults
            3, 1, 1.
        padding (int, tuple or str, optional): None (default) pads ``(kernel_size - 1) // 2
            * dilation`` on each side.
        norm_layer (callable, optional): built as ``norm_layer(out_channels)``; None leaves
            it out. Default: ``torch.nn.BatchNorm3d``.

    Shapes: Tensor[N, in_channels, D, H, W] to Tensor[N, out_channels, D_out, H_out,
    W_out], as ``torch.nn.Conv3d`` with these settings.

    Devices, determinism, ONNX: plain PyTorch (no native op): it runs on any device and
    dtype its torch layers support, with torch's own determinism rules, and
    exports to ONNX through torch's own exporter like any torch code.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Tuple[int, int, int]] = 3,
        stride: Union[int, Tuple[int, int, int]] = 1,
        padding: Optional[Union[int, Tuple[int, int, int], str]] = None,
        groups: int = 1,
        norm_layer: Optional[Callable[..., torch.nn.Module]] = torch.nn.BatchNorm3d,
        activation_layer: Optional[Callable[..., torch.nn.Module]] = torch.nn.ReLU,
        dilation: Union[int, Tuple[int, int, int]] = 1,
        inplace: Optional[bool] = True,
        bias: Optional[bool] = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            groups,
            norm_layer,
            activation_layer,
            dilation,
            inplace,
            bias,
            torch.nn.Conv3d,
        )


class SqueezeExcitation(torch.nn.Module):
    """Squeeze-and-Excitation (Hu et al., https://arxiv.org/abs/1709.01507): each channel of
    the input scaled by ``scale_activation(fc2(activation(fc1(mean over H, W))))``, fc1 and
    fc2 being 1x1 convolutions through ``squeeze_channels``.

    Args:
        input_channels (int): the input's channels.
        squeeze_channels (int): the bottleneck's channels.
        activation (callable): the bottleneck's activation (delta in the paper). Default:
            ``torch.nn.ReLU``.
        scale_activation (callable): the gate (sigma in the paper). Default: ``torch.nn.Sigmoid``.

    Shapes: ``forward(input)`` maps Tensor[N, input_channels, H, W] to that shape.

    Devices, determinism, ONNX: plain PyTorch (no native op): it runs on any device and
    dtype its torch layers support, with torch's own determinism rules, and
    exports to ONNX through torch's own exporter like any torch code.
    """

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: Callable[..., torch.nn.Module] = torch.nn.ReLU,
        scale_activation: Callable[..., torch.nn.Module] = torch.nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc1 = torch.nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = torch.nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    # Named as torchvision names it: models built on the block (EfficientNet's, MobileNetV3's)
    # and user subclasses call or override `_scale`.
    def _scale(self, input: Tensor) -> Tensor:
        squeezed = self.activation(self.fc1(self.avgpool(input)))
        return self.scale_activation(self.fc2(squeezed))

    def forward(self, input: Tensor) -> Tensor:
        return self._scale(input) * input


class MLP(torch.nn.Sequential):
    """A multi-layer perceptron: for each hidden width but the last, ``Linear`` ->
    ``norm_layer`` (if given) -> ``activation_layer`` -> ``Dropout``; then ``Linear`` to the
    last width -> ``Dropout``.

    Args:
        in_channels (int): the input's last dimension.
        hidden_channels (List[int]): the widths of the layers; the last is the output's.
        norm_layer (callable, optional): built as ``norm_layer(width)``. Default: None.
        activation_layer (callable, optional): Default: ``torch.nn.ReLU``.
        inplace (bool, optional): passed to the activation and the Dropout layers; None
            (default) keeps their own defaults.
        bias (bool): the Linear layers' bias. Default: True.
        dropout (float): the Dropout layers' probability. Default: 0.0.

    Shapes: Tensor[..., in_channels] to Tensor[..., hidden_channels[-1]]. In training
    the Dropout layers draw from torch's random number generator.

    Devices, determinism, ONNX: plain PyTorch (no native op): it runs on any device and
    dtype its torch layers support, with torch's own determinism rules, and
    exports to ONNX through torch's own exporter like any torch code.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: List[int],
        norm_layer: Optional[Callable[..., torch.nn.Module]] = None,
        activation_layer: Optional[Callable[..., torch.nn.Module]] = torch.nn.ReLU,
        inplace: Optional[bool] = None,
        bias: bool = True,
        dropout: float = 0.0,
    ):
        kwargs = {} if inplace is None else {"inplace": inplace}
        layers: List[torch.nn.Module] = []
        width = in_channels
        for hidden in hidden_channels[:-1]:
            layers.append(torch.nn.Linear(width, hidden, bias=bias))
            if norm_layer is not None:
                layers.append(norm_layer(hidden))
            if activation_layer is None:
                # torchvision calls it regardless and fails with this same exception type
                raise TypeError("MLP: activation_layer is None but hidden layers need an activation")
            layers.append(activation_layer(**kwargs))
            layers.append(torch.nn.Dropout(dropout, **kwargs))
            width = hidden
        layers.append(torch.nn.Linear(width, hidden_channels[-1], bias=bias))
        layers.append(torch.nn.Dropout(dropout, **kwargs))
        super().__init__(*layers)


class Permute(torch.nn.Module):
    """Returns ``torch.permute(x, dims)``, a view of the input with its dimensions reordered.

    Args:
        dims (List[int]): the new order of the dimensions.

    Devices, determinism, ONNX: a view, on any device and dtype, always the same result;
    it exports to ONNX (as ``Transpose``) through torch's own exporter.
    """

    def __init__(self, dims: List[int]):
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


__all__ = [
    "Conv2dNormActivation",
    "Conv3dNormActivation",
    "ConvNormActivation",
    "FrozenBatchNorm2d",
    "MLP",
    "Permute",
    "SqueezeExcitation",
    "interpolate",
]
