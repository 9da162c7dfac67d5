"""detops-losses: detection losses as fused native ops."""

from . import _registrations  # noqa: F401  (fake kernels, autograd and autocast)
from ._library import build_info

__all__ = ["build_info"]
__version__ = __import__("importlib.metadata").metadata.version("detops-losses")
