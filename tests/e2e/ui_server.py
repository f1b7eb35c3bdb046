"""Dagster webserver + daemon as subprocesses against a temp DAGSTER_HOME, for browser tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def stop_process(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Each server runs in its own session, so its code-server children go with it."""
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"webserver exited ({process.returncode}):\n{log.read_text()[-3000:]}"
            )
        with suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout_s}s:\n{log.read_text()[-3000:]}")


@contextmanager
def dagster_ui(env: dict[str, str], port: int, logs: Path, timeout_s: float = 120) -> Iterator[str]:
    """Yields the UI's base URL; the code location comes from pyproject's [tool.dagster]."""
    full_env = {**os.environ, **env}
    logs.mkdir(parents=True, exist_ok=True)
    commands = {
        "webserver": [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)],
        # The daemon dequeues runs launched from the UI (QueuedRunCoordinator) and runs sensors.
        "daemon": [str(BIN / "dagster-daemon"), "run"],
    }
    processes: list[subprocess.Popen] = []
    try:
        for name, command in commands.items():
            with open(logs / f"{name}.log", "wb") as log:
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=REPO_ROOT,
                        env=full_env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/server_info", processes[0], logs / "webserver.log", timeout_s)
        yield base
    finally:
        for process in processes:
            stop_process(process)
