"""The dashboard served on loopback by ``streamlit run``, and Debian's chromium driven by playwright, for end-to-end tests.

playwright's own browser download does not work here, so the browser is the
system's (``/usr/bin/chromium``, installed by ``.ci/services``), launched with
the flags that keep it from reaching out (no background networking, no
component updates, no sync).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(address: str) -> bool:
    """Whether Streamlit answers its health check at ``address`` (False while it is not listening yet)."""
    try:
        with urllib.request.urlopen(f"{address}/_stcore/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@contextmanager
def served_dashboard(config: Path, log: Path, *, timeout: float = 60.0) -> Iterator[str]:
    """``streamlit run dashboard/app.py`` on a free loopback port over ``config``; yields its address."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "MAPE_DB_URL"}
    env.update(MAPE_CONFIG=str(config), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=config.parent)
        address = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"streamlit exited with status {process.returncode}: {log.read_text()[-2000:]}")
                if _healthy(address):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not answer on {address} within {timeout:.0f} s: "
                                       f"{log.read_text()[-2000:]}")
                time.sleep(0.3)
            yield address
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
