"""sigmoid_focal_loss (torchvision.ops.focal_loss): the documented, TorchScript-able wrapper of the native op."""

import torch
from torch import Tensor


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2,
    reduction: str = "none",
) -> Tensor:
    """Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", 2017), as
    ``torchvision.ops.sigmoid_focal_loss`` defines it, in one fused native op::

        p    = sigmoid(inputs)
        ce   = binary_cross_entropy_with_logits(inputs, targets)   # per element
        p_t  = p * targets + (1 - p) * (1 - targets)
        loss = ce * (1 - p_t) ** gamma
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss   # if alpha >= 0

    then the reduction. Gradients flow to ``inputs`` and, where it requires grad, to
    ``targets`` (as through torchvision's composition), computed by a second native op from
    ``inputs`` and ``targets`` alone: nothing of the forward pass is kept. There is no
    second derivative (double backward raises a RuntimeError).

    Args:
        inputs (Tensor): logits, any shape, float32, float64, float16 or bfloat16.
        targets (Tensor): labels of the same shape (0 negative, 1 positive; values between
            are computed by the same formula). Two floating dtypes are promoted to a common
            one, as torchvision's arithmetic does.
        alpha (float): weight of the positives in [0, 1] (negatives get ``1 - alpha``), or
            -1 for no weighting. Default: 0.25.
        gamma (float): exponent of the modulating factor ``1 - p_t``. Default: 2.
        reduction (str): ``"none"`` (the loss per element), ``"mean"`` or ``"sum"`` (a
            0-dim tensor). Default: ``"none"``.

    Returns:
        Tensor: the loss, in the (promoted) dtype of the inputs; under autocast float32,
        as torchvision's (its ``binary_cross_entropy_with_logits`` runs in float32 there).

    Numerics and unusual input (decisions; the tests check each against torchvision):

    - float16 and bfloat16 are computed in float32 and rounded once (torchvision rounds
      after each of its ops), so detops is at least as close to the exact loss;
    - the cross-entropy is ``(1 - t) * x - log_sigmoid(x)`` from one ``exp(-|x|)``: finite
      for any finite logit (e.g. +-100, +-1e30); ``1 - p_t`` is formed from ``sigmoid(x)``
      and ``sigmoid(-x)`` without cancellation, so where torchvision's ``1 - p_t`` loses its
      digits (``|x|`` above about 8) detops is more exact, by less than torchvision's own
      float32 error of the loss;
    - infinite logits give what torchvision's arithmetic gives: ``inf`` loss for a wrong
      class, NaN where ``0 * inf`` arises (a right class, ``targets`` 1 at ``+inf``); NaN
      inputs or targets give NaN;
    - for ``gamma < 1`` the derivative of ``(1 - p_t) ** gamma`` is infinite at
      ``1 - p_t == 0`` (only reached when ``exp(-|x|)`` underflows); detops takes the
      product's limit 0 there, where torchvision's gradient is NaN;
    - empty inputs: an empty loss, a sum of 0 and a mean of NaN (as torchvision);
    - the mean and sum are deterministic (fixed chunks, fixed order, no atomics) on CPU
      and CUDA, whatever the number of threads;
    - errors: ``alpha`` outside [0, 1] and not -1 and a ``reduction`` other than the three
      raise torchvision's ``ValueError`` (same messages); ``targets`` of another shape,
      device or a non-floating dtype, and non-floating ``inputs``, raise a RuntimeError
      from the native op naming the argument.

    Devices, determinism, ONNX: CPU and CUDA kernels, forward and backward; both are
    repeatable (bitwise identical on every run) on both devices. Exports to ONNX as the
    definition term by term in standard operators (``Sigmoid``, a softplus form of the
    cross-entropy, ``Mul`` / ``Pow``, ``ReduceMean`` / ``ReduceSum``), computed in float32
    (float64 for float64 inputs); ONNX Runtime matches eager to float32 rounding. alpha,
    gamma and reduction are fixed in the graph; shapes may be dynamic.
    """
    if not (0 <= alpha <= 1) and alpha != -1:
        raise ValueError(f"Invalid alpha value: {alpha}. alpha must be in the range [0,1] or -1 for ignore.")
    if reduction != "none" and reduction != "mean" and reduction != "sum":
        raise ValueError(
            f"Invalid Value for arg 'reduction': '{reduction} \n Supported reduction modes: 'none', 'mean', 'sum'"
        )
    if inputs.is_floating_point() and targets.is_floating_point() and inputs.dtype != targets.dtype:
        dtype = torch.promote_types(inputs.dtype, targets.dtype)
        inputs = inputs.to(dtype)
        targets = targets.to(dtype)
    return torch.ops.detops.sigmoid_focal_loss(inputs, targets, float(alpha), float(gamma), reduction)
