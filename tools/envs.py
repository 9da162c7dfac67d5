"""Virtual environments shared by all nox sessions: torch is installed once per
environment (it is 5.5 GB), not once per session.

    python ci/envs.py dev      # prints the environment's python, creating it if needed
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVS = os.path.join(ROOT, ".venvs")


def _requirements(name: str) -> str:
    # "<pkg>-alone" environments share one file: torch and the test tools, no detops.
    return os.path.join(ROOT, "ci", "requirements-alone.txt" if name.endswith("-alone") else f"requirements-{name}.txt")


def python_of(name: str) -> str:
    return os.path.join(ENVS, name, "bin", "python")


def ensure(name: str) -> str:
    """Create (or update, when its requirements file changed) environment `name` and
    return the path of its python."""
    req = _requirements(name)
    with open(req, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    env_dir = os.path.join(ENVS, name)
    stamp = os.path.join(env_dir, ".detops-requirements")
    if os.path.exists(stamp) and open(stamp).read() == digest:
        return python_of(name)
    if not os.path.exists(python_of(name)):
        print(f"[envs] creating {env_dir}", flush=True)
        venv.EnvBuilder(with_pip=True).create(env_dir)
    print(f"[envs] installing {os.path.basename(req)} into {env_dir}", flush=True)
    # Each file pins its torch exactly; a machine-wide pip constraint (this VM caps torch at
    # the release it keeps on disk) must not veto the pin of a newer compat torch.
    subprocess.run(
        [python_of(name), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", req],
        check=True,
        env={**os.environ, "PIP_CONSTRAINT": os.devnull},
    )
    with open(stamp, "w") as f:
        f.write(digest)
    return python_of(name)


if __name__ == "__main__":
    print(ensure(sys.argv[1] if len(sys.argv) > 1 else "dev"))
