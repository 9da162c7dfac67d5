"""What the loss ops register with torch besides their kernels."""

from . import _library  # noqa: F401  (the ops must exist before we register against them)
