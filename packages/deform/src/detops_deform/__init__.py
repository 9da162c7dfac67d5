"""detops-deform: deformable convolution with torchvision.ops semantics.

``deform_conv2d`` (v1 without ``mask``, v2 with it) and the ``DeformConv2d`` module run
native CPU and CUDA kernels registered as ``torch.ops.detops.deform_conv2d`` (and
``torch.ops.detops._deform_conv2d_backward`` for the gradients of input, offset, weight,
mask and bias). They script with TorchScript, trace under ``torch.compile(fullgraph=True)``
and ``torch.export``, and compute float16/bfloat16 inputs with float32 accumulation.

Defined behaviour on unusual input:

- a sampling position samples zero unless ``-1 < y < height`` and ``-1 < x < width``;
  inside that window, neighbouring pixels outside the image count as zero (torchvision's
  rule). The offset gradient uses torchvision's window ``-1 <= y < height``,
  ``-1 <= x < width``;
- a NaN or infinite offset makes that tap sample zero, with zero gradient for input and
  offset; no memory outside the input is ever read or written. NaN in ``mask`` (or in the
  input) propagates to the output as NaN, as ordinary arithmetic does;
- an empty batch (or zero output channels) returns an empty output;
- malformed arguments raise ``RuntimeError`` naming the argument (offset or mask channel
  counts that do not match the kernel, spatial sizes that do not match the output,
  in_channels not divisible by groups or offset_groups, non-positive stride or dilation,
  negative padding, mismatched dtypes or devices); wrong offset or mask sizes also
  carry torchvision's phrase for them ("invalid batch size of offset", "mask.shape[1] is
  not valid", ...), so code matching torchvision's messages keeps working;
- ``deform_conv2d`` is a leaf of ``torch.fx.symbolic_trace`` graphs (``torch.fx.wrap``).

Memory: the batch is processed in chunks whose column buffer (in_channels * kernel_h *
kernel_w values per output position, in float32 for float16/bfloat16 inputs) stays within
24 MiB on CPU and 256 MiB on CUDA. The environment variable ``DETOPS_DEFORM_COLUMN_BYTES``
(a number of bytes, read once per process) overrides both. A chunk holds whole images
while they fit; an image whose columns alone exceed the budget is processed in slices of
its output positions.
"""

import math
import operator
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import init
from torch.nn.parameter import Parameter

from . import _registrations  # noqa: F401  (fake kernels, autograd and autocast)
from ._library import build_info

__all__ = ["deform_conv2d", "DeformConv2d", "build_info"]
__version__ = __import__("importlib.metadata").metadata.version("detops-deform")


@torch.jit.unused
def _checked_pair(value, name: str) -> Tuple[int, int]:
    # Anything usable as an index (int, numpy integer, ...) or a pair of such. A tuple or
    # list is never an index: skipping the failing operator.index keeps torch.compile off
    # that TypeError, which torch 2.11's dynamo cannot trace (fixed by 2.13).
    if not isinstance(value, (tuple, list)):
        try:
            return (operator.index(value), operator.index(value))
        except TypeError:
            pass
    try:
        items = tuple(value)
        if len(items) == 2:
            return (operator.index(items[0]), operator.index(items[1]))
    except TypeError:
        pass
    raise TypeError(f"deform_conv2d: {name} must be an int or a pair of ints, got {value!r}")


def _pair(value: Tuple[int, int], name: str) -> Tuple[int, int]:
    # Eager mode accepts an int or any pair; TorchScript (as torchvision) a Tuple[int, int].
    if not torch.jit.is_scripting():
        return _checked_pair(value, name)
    return value


@torch.fx.wrap  # a leaf of torch.fx graphs, as torchvision's ops are
def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: Tuple[int, int] = (1, 1),
    padding: Tuple[int, int] = (0, 0),
    dilation: Tuple[int, int] = (1, 1),
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Deformable convolution: v1 (Dai et al., 2017) when ``mask`` is None, v2 (modulated,
    Zhu et al., 2018) otherwise.

    Args:
        input (Tensor[B, C_in, H, W]): input feature map; float16, bfloat16 (both with
            float32 accumulation), float32 or float64. ``offset``, ``weight``, ``mask`` and
            ``bias`` must have its dtype and device.
        offset (Tensor[B, 2 * offset_groups * kh * kw, out_h, out_w]): per-position
            offsets; channel ``g * 2 * kh * kw + 2 * (i * kw + j)`` is the vertical and the
            next one the horizontal offset of kernel tap ``(i, j)`` for offset group ``g``.
            ``offset_groups`` is inferred from the channel count and must divide C_in.
        weight (Tensor[C_out, C_in / groups, kh, kw]): ``groups`` = C_in / weight.shape[1].
        bias (Tensor[C_out], optional): added to every output position.
        stride, padding, dilation (int or Tuple[int, int]): as in ``conv2d``.
        mask (Tensor[B, offset_groups * kh * kw, out_h, out_w], optional): modulation of
            each sampled value.

    Returns:
        Tensor[B, C_out, out_h, out_w], in ``input``'s dtype.

    Raises:
        RuntimeError: malformed arguments, naming the argument (see the module docstring).

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward (gradients of
    input, offset, weight, mask and bias). The forward and the CPU backward are repeatable
    (bitwise identical on every run); on CUDA the input gradient adds with float atomics
    unless ``torch.use_deterministic_algorithms(True)`` is set, which selects a repeatable
    fixed-point sum (the cuBLAS products then need ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, as
    PyTorch documents). Exports to ONNX as ``DeformConv`` (opset 19; mask, groups and offset
    groups supported; channel counts must be static).
    """
    stride_h, stride_w = _pair(stride, "stride")
    pad_h, pad_w = _pair(padding, "padding")
    dil_h, dil_w = _pair(dilation, "dilation")
    return torch.ops.detops.deform_conv2d(
        input, offset, weight, bias, mask, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w
    )


class DeformConv2d(nn.Module):
    """Deformable convolution layer; see :func:`deform_conv2d`. Same constructor,
    initialisation and ``repr`` as ``torchvision.ops.DeformConv2d``.

    Args:
        in_channels (int): channels of the input; divisible by ``groups``.
        out_channels (int): channels of the output; divisible by ``groups``.
        kernel_size (int or Tuple[int, int]): the kernel's (height, width).
        stride, padding, dilation (int or Tuple[int, int]): as in ``conv2d``; defaults 1,
            0, 1.
        groups (int): convolution groups. Default: 1.
        bias (bool): learn a bias. Default: True.

    ``forward(input, offset, mask=None)`` takes :func:`deform_conv2d`'s tensors of those
    names (in the parameters' dtype and device) and returns Tensor[B, out_channels, out_h,
    out_w]. Raises ValueError for a non-positive ``groups``, ``in_channels`` or kernel size,
    a negative ``out_channels``, or channels not divisible by ``groups``.

    Devices, determinism, ONNX: those of :func:`deform_conv2d` (CPU and CUDA kernels; the
    CUDA input gradient is repeatable only under
    ``torch.use_deterministic_algorithms(True)``; ONNX ``DeformConv``, opset 19).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        # torchvision lets these through to a ZeroDivisionError (groups 0, or an empty
        # kernel or no input channel in the initialisation's fan-in) or a tensor with a
        # negative size; name the argument instead.
        if groups <= 0:
            raise ValueError(f"groups must be a positive integer, got {groups}")
        if in_channels <= 0:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels}")
        if out_channels < 0:
            raise ValueError(f"out_channels must be a non-negative integer, got {out_channels}")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _checked_pair(kernel_size, "kernel_size")
        if min(self.kernel_size) <= 0:
            raise ValueError(f"kernel_size must be positive, got {kernel_size}")
        self.stride = _checked_pair(stride, "stride")
        self.padding = _checked_pair(padding, "padding")
        self.dilation = _checked_pair(dilation, "dilation")
        self.groups = groups
        self.weight = Parameter(
            torch.empty(out_channels, in_channels // groups, self.kernel_size[0], self.kernel_size[1])
        )
        if bias:
            self.bias = Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor, offset: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return deform_conv2d(
            input,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )

    def __repr__(self) -> str:
        text = f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}"
        text += f", kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text + ")"
