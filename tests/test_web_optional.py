"""The web port's libraries are optional: the plain server runs without them, and asking
for the web port without them is a clear error. The startup lines print the page's URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ChatdProcess

ROOT = Path(__file__).resolve().parent.parent
# Run chatd as if h11 and wsproto were not installed (an import of either fails).
WITHOUT = (
    "import sys, runpy; sys.modules['h11'] = None; sys.modules['wsproto'] = None; "
    "sys.argv = ['chatd'] + sys.argv[1:]; runpy.run_module('chatd', run_name='__main__')"
)


def chatd_without_web(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, "--host", "127.0.0.1", "--port", "0", "--db",
         ":memory:", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_plain_server_never_imports_the_web_libraries() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import chatd.cli, chatd.server, sys; "
         "print(sorted(m for m in ('h11', 'wsproto', 'chatd.web.stream') if m in sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.stdout.strip() == "[]", done.stderr


def test_web_port_without_its_libraries_is_a_clear_error() -> None:
    done = chatd_without_web("--web-port", "0")
    assert done.returncode == 2
    assert "pip install 'chatd[web]'" in done.stderr


def test_startup_prints_the_url_to_open() -> None:
    server = ChatdProcess(web=True)
    try:
        urls = [line for line in server.stdout_lines if "in a browser, open:" in line]
        assert urls == [f"chatd: in a browser, open:  http://127.0.0.1:{server.web_port}/\n"]
    finally:
        server.stop()
