"""A real chatd process on 127.0.0.1 (port 0) and blocking line clients (raw, JSON,
IRC) to talk to it: shared by the tests (through tests/helpers.py) and by the
benchmarks and stress scenarios in bench/.

No fixed sleeps anywhere: every wait polls for a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_LISTEN_RE = re.compile(r"listening on (\S+):(\d+) \(([\w-]+)\)")


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    what: str = "condition",
    interval: float = 0.01,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def chatd_command(port: int, *args: str) -> list[str]:
    """``python -m chatd`` on 127.0.0.1, ``port`` (0: any), with ``args``."""
    return [sys.executable, "-m", "chatd", "--host", "127.0.0.1", "--port", str(port), *args]


def stop_process(
    proc: subprocess.Popen[Any], timeout: float = 10, sig: int = signal.SIGTERM
) -> int:
    """Send ``sig`` to ``proc`` if it still runs and wait for it, killing it if it outlasts
    ``timeout``; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class ChatdProcess:
    """``python -m chatd`` on 127.0.0.1, port 0 (or a given port for restarts)."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        port: int = 0,
        irc: bool = False,
        web: bool = False,
        preexec: Callable[[], None] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        # History off the disk unless a test asks for a file: servers started by tests
        # must not share (or lock) the user's ~/.local/share/chatd/history.db.
        self.args = list(args) if "--db" in args else ["--db", ":memory:", *args]
        # TLS only for the tests that ask for it (tests/test_tls_server.py): a TLS server
        # keeps its certificate in the user's data directory, and holds the banner back
        # for a moment to tell TLS from plain text.
        if not any(arg.startswith("--tls") for arg in self.args):
            self.args += ["--tls", "off"]
        self.irc_tls_port: int | None = None
        self.fingerprint: str | None = None
        self.env = env
        self.port = port
        self.irc_port: int | None = 0 if irc else None
        self.web_port: int | None = 0 if web else None
        self.preexec = preexec
        self.wrap = list(wrap)  # a command prefix, e.g. ip netns exec NS (tests/netns.py)
        self.proc: subprocess.Popen[str] | None = None
        self.stdout_lines: list[str] = []
        self.start()

    def start(self) -> None:
        cmd = [*self.wrap, *chatd_command(self.port, "--log-level", "info", *self.args)]
        if self.irc_port is not None:
            cmd += ["--irc-port", str(self.irc_port)]
        if self.web_port is not None:
            cmd += ["--web-port", str(self.web_port)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(self.env or {})}
        env.pop("CHATD_PASSWORD", None) if "CHATD_PASSWORD" not in (self.env or {}) else None
        self.stderr_path = Path(f"/tmp/chatd-test-{os.getpid()}-{id(self)}.log")
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd=ROOT,
            preexec_fn=self.preexec,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"chatd exited early:\n{self.log()}")
            self.stdout_lines.append(line)
            match = _LISTEN_RE.search(line)
            if match:
                if match.group(3) == "native":
                    self.port = int(match.group(2))
                elif match.group(3) == "irc":
                    self.irc_port = int(match.group(2))
                elif match.group(3) == "irc-tls":
                    self.irc_tls_port = int(match.group(2))
                elif match.group(3) == "web":
                    self.web_port = int(match.group(2))
            if line.startswith("chatd: fingerprint "):
                self.fingerprint = line.split()[-1]
            if "press Ctrl-C" in line:
                return
        raise RuntimeError("chatd did not start in time")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.stderr_path.read_text()
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.proc is not None
        code = stop_process(self.proc, timeout, sig)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()
        return code

    def restart(self, *extra: str) -> None:
        """Stop and start again on the same port(s)."""
        self.stop()
        self.args += list(extra)
        self.start()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    # convenience
    def raw(self, timeout: float = 5.0) -> RawClient:
        return RawClient(self.port, timeout=timeout)

    def json_client(self, nick: str, *rooms: str, **hello: Any) -> JsonClient:
        client = JsonClient(self.port)
        client.hello(nick, **hello)
        for room in rooms:
            client.join(room)
        return client

    def text_client(self, nick: str) -> RawClient:
        client = RawClient(self.port)
        client.send_line(nick)
        client.expect(lambda line: "You joined #lobby" in line)
        return client


class RawClient:
    """A blocking-with-timeout line client for tests and scenarios."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = 5.0,
        rcvbuf: int | None = None,
        source: str | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if source is not None:  # another loopback address (127.0.0.2, ...): "another host"
            self.sock.bind((source, 0))
        if rcvbuf is not None:  # before connect, so the advertised window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self._buf = b""
        self.lines: list[str] = []  # every line received, in order

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_line(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def read_line(self, timeout: float | None = None) -> str | None:
        """The next line, or None at EOF. Raises AssertionError on timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line within timeout; have {self._buf[:200]!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if self._buf:
                    line, self._buf = self._buf, b""
                    return line.decode("utf-8", "replace")
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode("utf-8", "replace")
        self.lines.append(text)
        return text

    def expect(self, predicate: Callable[[str], bool], timeout: float | None = None) -> str:
        """Read lines until one satisfies ``predicate``; return it."""
        deadline = time.monotonic() + (timeout or self.timeout)
        seen: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected line not seen; got {seen[-20:]}")
            line = self.read_line(remaining)
            if line is None:
                raise AssertionError(f"connection closed; got {seen[-20:]}")
            seen.append(line)
            if predicate(line):
                return line

    def read_until_closed(self, timeout: float | None = None) -> list[str]:
        got: list[str] = []
        while True:
            line = self.read_line(timeout)
            if line is None:
                return got
            got.append(line)

    def close(self) -> None:
        self.sock.close()


class JsonClient(RawClient):
    """JSON mode: frames are dicts."""

    def send_json(self, **obj: Any) -> None:
        self.send(json.dumps(obj).encode() + b"\n")

    def read_frame(self, timeout: float | None = None) -> dict[str, Any] | None:
        while True:
            line = self.read_line(timeout)
            if line is None:
                return None
            if line.startswith("{"):
                return json.loads(line)  # type: ignore[no-any-return]

    def expect_frame(self, **match: Any) -> dict[str, Any]:
        """Read frames until one has every key/value in ``match`` (``timeout=S`` is the
        deadline, not a key). A key that is a Python keyword: ``**{"from": "bob"}``."""
        timeout: float | None = match.pop("timeout", None)

        def matches(line: str) -> bool:
            if not line.startswith("{"):
                return False
            frame = json.loads(line)
            return all(frame.get(k) == v for k, v in match.items())

        return json.loads(self.expect(matches, timeout))  # type: ignore[no-any-return]

    def hello(self, nick: str, **extra: Any) -> dict[str, Any]:
        self.send_json(op="hello", nick=nick, **extra)
        return self.expect_frame(type="welcome")

    def join(self, room: str) -> dict[str, Any]:
        self.send_json(op="join", room=room)
        joined = self.expect_frame(type="joined", room=room)
        self.expect_frame(type="history_end", room=room)
        return joined

    def say(self, room: str, text: str) -> None:
        self.send_json(op="say", room=room, text=text)


def many_sockets(port: int, count: int, timeout: float = 10.0) -> list[socket.socket]:
    """Open ``count`` connections without blocking on each (for large scenarios)."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_WRITE)
    pending = len(socks)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            sel.unregister(key.fileobj)
            pending -= 1
    sel.close()
    if pending:
        raise AssertionError(f"{pending} connections did not complete")
    for s in socks:
        s.setblocking(True)
    return socks


class IrcClient(RawClient):
    """Raw IRC lines over a socket; answers nothing by itself."""

    def send_line(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def read_line(self, timeout: float | None = None) -> str | None:
        line = super().read_line(timeout)
        if line is not None:
            assert line.endswith("\r"), f"not CRLF-terminated: {line!r}"
            line = line[:-1]
        return line

    def register(self, nick: str, *caps: str, password: str | None = None) -> list[str]:
        if caps:
            self.send_line("CAP LS 302")
            self.send_line("CAP REQ :" + " ".join(caps))
        if password is not None:
            self.send_line(f"PASS {password}")
        self.send_line(f"NICK {nick}")
        self.send_line(f"USER {nick} 0 * :{nick} the tester")
        if caps:
            self.send_line("CAP END")
        welcome = []
        while True:
            line = self.expect(lambda line: True)
            welcome.append(line)
            if re.match(r":\S+ (376|422) ", line):
                return welcome

    def join(self, room: str) -> list[str]:
        self.send_line(f"JOIN {room}")
        got = []
        while True:
            line = self.expect(lambda line: True)
            got.append(line)
            if " 366 " in line and room.lower() in line.lower():
                return got
