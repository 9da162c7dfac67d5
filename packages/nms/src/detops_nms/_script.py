"""TorchScript for wrappers with keyword-only arguments.

TorchScript cannot compile a function whose keyword-only arguments have defaults, but
``torch.jit.script(obj)`` compiles ``obj.__prepare_scriptable__()`` when obj has one. A
wrapper decorated with ``scripts_as(twin)`` therefore scripts as `twin`: the same body with
those arguments positional-or-keyword. Calls by keyword, the only ones the eager wrapper
accepts, mean the same in both.
"""

from typing import Callable


def scripts_as(twin: Callable) -> Callable[[Callable], Callable]:
    def mark(fn: Callable) -> Callable:
        fn.__prepare_scriptable__ = lambda: twin
        return fn

    return mark
