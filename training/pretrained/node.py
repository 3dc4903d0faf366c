"""The Node.js reference runtime: the npm packages pinned in ``node/package-lock.json``, installed once
into the shared package cache with ``npm ci``, and a way to run one of ``node/``'s scripts on them.

A script reads one JSON request on stdin (file paths of its inputs) and writes one JSON answer on
stdout; anything it logs goes to stderr. Nothing here is imported by the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from training.pretrained.packages import cache_dir

NODE_DIR = Path(__file__).resolve().parent / "node"


class NodeError(RuntimeError):
    """Node.js or npm is missing, the install failed, or a script failed."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise NodeError(f"`{name}` is not on PATH: install Node.js 20 (with npm) to run the TF.js reference")
    return path


def node_modules() -> Path:
    """The ``node_modules`` folder of ``node/package-lock.json``, installed by ``npm ci`` on first use.

    It lives in ``cache_dir()/node/<sha256(lock)[:16]>``: a changed lock gets a fresh folder, and the
    install happens in a temporary folder renamed into place, so a half install is never seen."""
    lock = NODE_DIR / "package-lock.json"
    target = cache_dir() / "node" / hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    if (target / "node_modules").is_dir():
        return target / "node_modules"
    npm = _tool("npm")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".install-") as tmp:
        work = Path(tmp) / "tree"
        work.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(NODE_DIR / name, work / name)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=work,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise NodeError(f"npm ci failed in {work}: {done.stderr.strip()[-1500:]}")
        try:
            work.rename(target)
        except OSError:                       # another process installed the same lock first
            if not (target / "node_modules").is_dir():
                raise
    return target / "node_modules"


def run_node(script: Path, request: dict, timeout: float = 600.0) -> dict:
    """Run ``node script`` with ``request`` as JSON on stdin and return the JSON it prints on stdout.

    ``NODE_PATH`` points at ``node_modules()``, so the script resolves the pinned packages (an ES
    module does so through ``createRequire``)."""
    node = _tool("node")
    env = {**os.environ, "NODE_PATH": str(node_modules())}
    done = subprocess.run([node, str(script)], input=json.dumps(request), capture_output=True, text=True,
                          env=env, timeout=timeout)
    if done.returncode != 0:
        raise NodeError(f"node {Path(script).name} exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as err:
        raise NodeError(f"node {Path(script).name} printed no JSON ({err}): {done.stdout[-500:]!r}") from err
