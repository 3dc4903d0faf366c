"""A real uvicorn server in a subprocess on a free loopback port, killed on the way out, always."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SIGHTLINE = ("app.main:create_app", "--factory")   # the server; bench.floor_app:app is the HTTP floor


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int
    process: subprocess.Popen


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(pid: int) -> float:
    """``process_cpu_seconds`` of ``pid`` and of its children, theirs and so on (the server processes
    of ``SIGHTLINE_WORKERS`` under uvicorn's supervisor)."""
    try:
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
    except OSError:
        children = []
    return process_cpu_seconds(pid) + sum(process_tree_cpu_seconds(c) for c in children)


def _tail(log) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


def _wait_ready(proc: subprocess.Popen, base_url: str, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"uvicorn exited with {proc.returncode}:\n{_tail(log)}")
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=2.0)
        except httpx.TransportError:
            r = None
        if r is not None and r.status_code == 200:
            return
        if r is not None and "model_load_failed" in r.text:
            raise ServerFailed(f"the server could not load its models: {r.text}")
        time.sleep(0.1)
    raise ServerFailed(f"/readyz was not 200 within {timeout:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def uvicorn_server(models_dir: Path, ready_timeout: float = 60.0, settings: dict[str, str] | None = None,
                   app: tuple[str, ...] = SIGHTLINE) -> Iterator[Server]:
    """``python -m uvicorn app.main:create_app --factory`` (or ``app``) serving ``models_dir``, ready;
    ``settings`` are more ``SIGHTLINE_*`` variables. ``SIGHTLINE_WORKERS`` above 1 starts that many
    server processes with a metrics folder of their own, as ``python -m app`` does."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", *app, "--host", HOST, "--port", str(port)]
    workers = int((settings or {}).get("SIGHTLINE_WORKERS", "1"))
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "SIGHTLINE_MODELS_DIR": str(models_dir), "SIGHTLINE_DATA_DIR": data_dir,
               **(settings or {})}
        if workers > 1:
            cmd += ["--workers", str(workers)]
            env["PROMETHEUS_MULTIPROC_DIR"] = str(Path(data_dir) / "metrics")
            (Path(data_dir) / "metrics").mkdir()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base_url = f"http://{HOST}:{port}"
            _wait_ready(proc, base_url, ready_timeout, log)
            yield Server(base_url=base_url, pid=proc.pid, process=proc)
        finally:
            _stop(proc)
