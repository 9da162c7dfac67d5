"""Imported at start-up by every Python process of `nox -s sanitize` (tools/sanitize.py puts
this folder on PYTHONPATH), tests' subprocesses included.

UBSan ignores UBSAN_OPTIONS' log_path when ASan is loaded too: libubsan passes it to
__sanitizer_set_report_path, which resolves to the preloaded libasan's copy, so UBSan
reports would go to stderr, where a test capturing a subprocess's output hides them.
Setting the path through libubsan's own symbol sends them to the scanned log folder.
"""

import ctypes
import os

for _option in os.environ.get("UBSAN_OPTIONS", "").split(":"):
    if _option.startswith("log_path="):
        try:
            _ubsan = ctypes.CDLL("libubsan.so.1")
        except OSError:
            break
        _ubsan.__sanitizer_set_report_path(_option[len("log_path=") :].encode())
