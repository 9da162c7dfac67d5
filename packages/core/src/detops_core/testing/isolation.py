"""Running code in a child process, for inputs that once crashed or hung the process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_isolated(code: str, timeout: float = 120.0) -> str:
    """Run `code` in a fresh Python process and return its standard output.

    For inputs that once crashed the process (SIGFPE, SIGSEGV) or hung it: in a child, a
    crash or a hang fails the one test that caused it instead of killing the whole pytest
    run, and a C++ call that never returns is still stopped by `timeout` seconds.
    Raises AssertionError with the child's output when it exits non-zero or times out.
    """
    source = textwrap.dedent(code)
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    try:
        done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"still running after {timeout} s:\n{source}\n{e.stdout or ''}{e.stderr or ''}") from None
    if done.returncode != 0:
        raise AssertionError(
            f"exit code {done.returncode}:\n{source}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
    return done.stdout
