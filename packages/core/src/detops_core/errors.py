"""How a native argument error becomes the exception torchvision raises for the same input.

Every detops argument error is a RuntimeError raised by the native op. Where torchvision
asserts the same thing (check_roi_boxes_shape: the shape of RoI boxes), callers catch
``AssertionError``. Such a native check (``detops::check_assertion`` in
``detops/checks.h``) ends its message with :data:`ASSERTION_TAG`, and the Python wrappers,
decorated with :func:`raises_assertions`, re-raise it as :class:`AssertionRuntimeError`:
one exception that both ``except RuntimeError`` and ``except AssertionError`` catch, with
detops' message. Checks that only Python makes raise :class:`AssertionRuntimeError`
directly.
"""

import functools
from typing import Callable, TypeVar

__all__ = ["ASSERTION_TAG", "AssertionRuntimeError", "raises_assertions"]

# The same text as detops::kAssertionTag.
ASSERTION_TAG = " [assertion]"

F = TypeVar("F", bound=Callable)


class AssertionRuntimeError(RuntimeError, AssertionError):
    """A detops argument error where torchvision raises AssertionError."""


def raises_assertions(fn: F) -> F:
    """`fn`, with native errors tagged :data:`ASSERTION_TAG` re-raised as
    :class:`AssertionRuntimeError` (the tag removed). TorchScript compiles `fn` itself
    (TorchScript has no try/except; a scripted call raises the native RuntimeError)."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as error:
            message = str(error)
            if isinstance(error, AssertionError) or ASSERTION_TAG not in message:
                raise
            raise AssertionRuntimeError(message.replace(ASSERTION_TAG, "")).with_traceback(
                error.__traceback__
            ) from None

    call.__prepare_scriptable__ = getattr(fn, "__prepare_scriptable__", lambda: fn)
    return call  # type: ignore[return-value]
