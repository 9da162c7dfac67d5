"""detops-losses: detection losses as fused native ops.

``sigmoid_focal_loss`` runs one native CPU or CUDA kernel for the loss (and one for its
gradients) registered as ``torch.ops.detops.sigmoid_focal_loss`` (and
``torch.ops.detops._sigmoid_focal_loss_backward``), where torchvision composes about eight
elementwise ops, each with its own full-size temporary. It scripts with TorchScript,
traces under ``torch.compile(fullgraph=True)`` and ``torch.export``, and translates to
standard ONNX operators (``detops_losses.onnx``).
"""

from . import _registrations  # noqa: F401  (fake kernels, autograd and autocast)
from ._library import build_info
from .box_iou_loss import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss
from .focal_loss import sigmoid_focal_loss

__all__ = [
    "build_info",
    "sigmoid_focal_loss",
    "generalized_box_iou_loss",
    "distance_box_iou_loss",
    "complete_box_iou_loss",
]
__version__ = __import__("importlib.metadata").metadata.version("detops-losses")
