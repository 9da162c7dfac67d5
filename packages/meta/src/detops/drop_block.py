"""torchvision.ops.drop_block names: DropBlock (Ghiasi et al., https://arxiv.org/abs/1810.12890),
in plain PyTorch.

In training, square (cubic) blocks of ``block_size`` are zeroed at random and the rest is
rescaled so that the mean is kept. Block centres are drawn with one ``bernoulli_`` call on a
tensor of torchvision's shape, dtype and device, with torchvision's probability ``gamma``
(the same float), so that under the same seed detops drops exactly the blocks torchvision
drops and the results are bitwise equal.
"""

from typing import List

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn


def _drop_blocks(
    input: Tensor, p: float, block_size: int, inplace: bool, eps: float, training: bool, dims: int
) -> Tensor:
    name = f"drop_block{dims}d"
    if p < 0.0 or p > 1.0:
        raise ValueError(f"{name}: p must be in [0, 1], got {p}")
    if input.dim() != dims + 2:
        raise ValueError(f"{name}: input must have {dims + 2} dimensions (N, C, spatial...), got {input.dim()}")
    if not training or p == 0.0:
        return input
    spatial: List[int] = input.shape[2:]
    for size in spatial:
        block_size = min(block_size, size)
    if block_size % 2 == 0:
        raise ValueError(f"{name}: block_size must be odd (after clamping to the input's size), got {block_size}")

    # gamma: the rate of block centres that drops a fraction p of the elements, counting
    # only centres whose whole block fits (the paper's eq. 1, in d dimensions).
    dropped = p
    valid = 1
    for size in spatial:
        dropped = dropped * size
        valid = valid * (size - block_size + 1)
    gamma = dropped / ((block_size**dims) * valid)
    grid = [input.shape[0], input.shape[1]] + [size - block_size + 1 for size in spatial]
    centres = torch.empty(grid, dtype=input.dtype, device=input.device)
    centres.bernoulli_(gamma)

    # Each centre covers the block reaching block_size - 1 elements back along every axis
    # (the grid of valid centres is that much smaller than the input): zero-pad by that much
    # on both sides and take the block maximum.
    padded = F.pad(centres, [block_size - 1] * (2 * dims))
    if dims == 2:
        covered = F.max_pool2d(padded, kernel_size=[block_size, block_size], stride=[1, 1])
    else:
        covered = F.max_pool3d(padded, kernel_size=[block_size, block_size, block_size], stride=[1, 1, 1])
    keep = 1 - covered
    scale = keep.numel() / (eps + keep.sum())
    if inplace:
        return input.mul_(keep).mul_(scale)
    return input * keep * scale


def drop_block2d(
    input: Tensor, p: float, block_size: int, inplace: bool = False, eps: float = 1e-06, training: bool = True
) -> Tensor:
    """DropBlock on ``input`` Tensor[N, C, H, W]: in training, zero blocks of
    ``block_size x block_size`` (clamped to H and W; must then be odd) so that a fraction
    ``p`` of the elements is dropped on average, and multiply the result by ``numel / (eps +
    number of elements kept)``. Returns ``input`` itself when ``training`` is False or ``p``
    is 0; with ``inplace`` the input is modified.

    Args:
        input (Tensor[N, C, H, W]): the feature map, any floating dtype.
        p (float): the fraction of elements to drop, in [0, 1].
        block_size (int): the side of a dropped block.
        inplace (bool): modify ``input`` instead of returning a new tensor. Default: False.
        eps (float): added to the kept count in the rescaling. Default: 1e-6.
        training (bool): drop only when True (default).

    Returns:
        Tensor[N, C, H, W]: same dtype and device as ``input``.

    Raises:
        ValueError: p outside [0, 1], another number of dimensions, or an even block size.

    Devices, determinism, ONNX: plain PyTorch, on any device torch supports. The block
    centres are one ``bernoulli_`` draw from torch's random number generator, exactly as
    torchvision draws them: the same seed gives the same mask and bitwise equal results,
    run after run. ONNX: torch's own exporter handles it like any torch code (in
    evaluation mode it is the identity).
    """
    return _drop_blocks(input, p, block_size, inplace, eps, training, 2)


def drop_block3d(
    input: Tensor, p: float, block_size: int, inplace: bool = False, eps: float = 1e-06, training: bool = True
) -> Tensor:
    """DropBlock on ``input`` Tensor[N, C, D, H, W] with cubic blocks: as :func:`drop_block2d`.

    Args:
        input (Tensor[N, C, D, H, W]): the feature map, any floating dtype.
        p, block_size, inplace, eps, training: as in :func:`drop_block2d` (cubic blocks).

    Returns:
        Tensor[N, C, D, H, W]: same dtype and device as ``input``.

    Devices, determinism, ONNX: as :func:`drop_block2d`: any device; one ``bernoulli_``
    draw from torch's generator, as torchvision's, so the same seed gives the same mask.
    ONNX: torch's own exporter handles it like any torch code (in evaluation mode it is
    the identity).
    """
    return _drop_blocks(input, p, block_size, inplace, eps, training, 3)


# Leaves under torch.fx.symbolic_trace (as in torchvision): their checks read the input's
# dimensions, which a tracing proxy does not have.
torch.fx.wrap("drop_block2d")
torch.fx.wrap("drop_block3d")


class DropBlock2d(nn.Module):
    """The module form of :func:`drop_block2d`; applies it only in training mode.

    Args:
        p (float): the fraction of elements to drop, in [0, 1].
        block_size (int): the side of a dropped block.
        inplace (bool): modify the input. Default: False.
        eps (float): added to the kept count in the rescaling. Default: 1e-6.

    Shapes: ``forward(input)`` takes Tensor[N, C, H, W] (any floating dtype) and returns
    a tensor of that shape, dtype and device.

    Devices, determinism, ONNX: as :func:`drop_block2d`: any device (CPU, CUDA, ...);
    torch's generator, the same mask as torchvision's for the same seed; exports
    through torch's own ONNX exporter.
    """

    def __init__(self, p: float, block_size: int, inplace: bool = False, eps: float = 1e-06) -> None:
        super().__init__()
        self.p = p
        self.block_size = block_size
        self.inplace = inplace
        self.eps = eps

    def forward(self, input: Tensor) -> Tensor:
        return drop_block2d(input, self.p, self.block_size, self.inplace, self.eps, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, block_size={self.block_size}, inplace={self.inplace}"


class DropBlock3d(DropBlock2d):
    """The module form of :func:`drop_block3d`; applies it only in training mode.

    Args:
        p, block_size, inplace, eps: as in :class:`DropBlock2d`.

    Shapes: ``forward(input)`` takes Tensor[N, C, D, H, W] (any floating dtype) and returns
    a tensor of that shape, dtype and device.

    Devices, determinism, ONNX: as :func:`drop_block3d`: any device (CPU, CUDA, ...);
    torch's generator, the same mask as torchvision's for the same seed; exports
    through torch's own ONNX exporter.
    """

    def __init__(self, p: float, block_size: int, inplace: bool = False, eps: float = 1e-06) -> None:
        super().__init__(p, block_size, inplace, eps)

    def forward(self, input: Tensor) -> Tensor:
        return drop_block3d(input, self.p, self.block_size, self.inplace, self.eps, self.training)


__all__ = ["DropBlock2d", "DropBlock3d", "drop_block2d", "drop_block3d"]
