"""Running code in a child process, for inputs that once crashed or hung the process."""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import sys
import tempfile
import textwrap

# Children are forked from a server process that has imported torch once (multiprocessing's
# forkserver): a fresh interpreter per call spent about 2 s importing torch, 10 times what
# the calls themselves take; forking the test process itself is unsafe once torch's thread
# pools have run.
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["torch"])


def _child(source: str, stdout: str, stderr: str, environ: dict) -> None:
    # The caller's environment as it is now (the server was forked from an older one).
    os.environ.clear()
    os.environ.update(environ)
    # Python's and native code's output alike go to the two files.
    for fd, path in ((1, stdout), (2, stderr)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    faulthandler.enable(sys.stderr)
    exec(compile(source, "<run_isolated>", "exec"), {"__name__": "__main__"})
    sys.stdout.flush()
    sys.stderr.flush()


def run_isolated(code: str, timeout: float = 120.0) -> str:
    """Run `code` in a child process and return what it printed.

    For inputs that once crashed the process (SIGFPE, SIGSEGV) or hung it: in a child, a
    crash or a hang fails the one test that caused it instead of killing the whole pytest
    run, and a C++ call that never returns is still stopped by `timeout` seconds.
    Raises AssertionError with the child's output when it fails, dies or times out.
    """
    source = textwrap.dedent(code)
    with tempfile.NamedTemporaryFile("r") as stdout, tempfile.NamedTemporaryFile("r") as stderr:
        child = _context.Process(target=_child, args=(source, stdout.name, stderr.name, dict(os.environ)))
        child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            raise AssertionError(f"still running after {timeout} s:\n{source}\n{stdout.read()}{stderr.read()}")
        if child.exitcode != 0:
            raise AssertionError(
                f"exit code {child.exitcode}:\n{source}\n--- stdout\n{stdout.read()}\n--- stderr\n{stderr.read()}"
            )
        return stdout.read()
