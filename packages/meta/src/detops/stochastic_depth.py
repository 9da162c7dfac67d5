"""torchvision.ops.stochastic_depth names: Stochastic Depth (Huang et al.,
https://arxiv.org/abs/1603.09382), in plain PyTorch.

In training, the input (a residual branch) is zeroed with probability ``p`` and otherwise
divided by ``1 - p``: as one draw for the whole batch (``"batch"``) or one per sample
(``"row"``). The draw is one ``bernoulli_`` call on a tensor of torchvision's shape, dtype
and device, so that under the same seed the results are bitwise equal to torchvision's.
"""

from typing import List

import torch
import torch.fx
from torch import Tensor, nn


def stochastic_depth(input: Tensor, p: float, mode: str, training: bool = True) -> Tensor:
    """Stochastic depth on ``input`` Tensor[N, ...]: in training, keep it with probability
    ``1 - p`` divided by ``1 - p``, else zero it; ``mode`` ``"batch"`` draws once for the
    whole tensor, ``"row"`` once per sample (dimension 0). Returns ``input`` itself when
    ``training`` is False or ``p`` is 0; p = 1 gives zeros.

    Args:
        input (Tensor[N, ...]): the residual branch's output, any floating dtype.
        p (float): the probability of zeroing, in [0, 1].
        mode (str): ``"batch"`` or ``"row"``.
        training (bool): drop only when True (default).

    Returns:
        Tensor[N, ...]: same shape, dtype and device as ``input``.

    Raises:
        ValueError: p outside [0, 1] or another mode.

    Devices, determinism, ONNX: plain PyTorch, on any device torch supports. The draw is
    one ``bernoulli_`` call on torch's random number generator, exactly as torchvision's:
    the same seed gives the same mask and bitwise equal results. ONNX: torch's own
    exporter handles it like any torch code (in evaluation mode it is the identity).
    """
    if p < 0.0 or p > 1.0:
        raise ValueError(f"stochastic_depth: p must be in [0, 1], got {p}")
    if mode not in ("batch", "row"):
        raise ValueError(f"stochastic_depth: mode must be 'batch' or 'row', got '{mode}'")
    if not training or p == 0.0:
        return input
    keep_rate = 1.0 - p
    shape: List[int] = [1] * input.dim()
    if mode == "row":
        shape[0] = input.shape[0]
    kept = torch.empty(shape, dtype=input.dtype, device=input.device).bernoulli_(keep_rate)
    if keep_rate > 0.0:
        kept.div_(keep_rate)  # keeps the expectation: E[kept] = 1
    return input * kept


# A leaf under torch.fx.symbolic_trace (as in torchvision): it reads the input's dimensions.
torch.fx.wrap("stochastic_depth")


class StochasticDepth(nn.Module):
    """The module form of :func:`stochastic_depth`; applies it only in training mode.

    Args:
        p (float): the probability of zeroing, in [0, 1].
        mode (str): ``"batch"`` or ``"row"``.

    Shapes: ``forward(input)`` takes Tensor[N, ...] (any floating dtype) and returns a
    tensor of that shape, dtype and device.

    Devices, determinism, ONNX: as :func:`stochastic_depth`: any device (CPU, CUDA, ...);
    torch's generator, the same mask as torchvision's for the same seed; exports
    through torch's own ONNX exporter.
    """

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, input: Tensor) -> Tensor:
        return stochastic_depth(input, self.p, self.mode, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


__all__ = ["StochasticDepth", "stochastic_depth"]
