"""The servers under measurement as subprocesses (chatd, chatd over TLS, the asyncio
baseline, the bare selectors loop): their command lines, start-up (port parsed from the
log), CPU pinning, RSS and CPU readings from /proc, and a kill that always happens.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.chatd_process import chatd_command
from bench.load_spec import raise_nofile

ROOT = Path(__file__).resolve().parent.parent


LISTEN_RE = re.compile(r"listening on \S+:(\d+)")


TICKS = os.sysconf("SC_CLK_TCK")


def _many_hosts(root: Path) -> list[str]:
    """Every load-generator client comes from 127.0.0.1: no per-address limit (if the
    chatd under test has one; --chatd-root may name an older tree)."""
    config = root / "chatd" / "config.py"
    if config.exists() and "max_clients_per_ip" in config.read_text():
        return ["--max-clients-per-ip", "0"]
    return []


def server_command(kind: str, db: str, root: Path = ROOT) -> list[str]:
    if kind == "chatd-tls":  # its certificate is made in $XDG_DATA_HOME (run() sets it)
        cmd = server_command("chatd", db, root)
        cmd[cmd.index("--tls") + 1] = "on"
        return cmd
    if kind == "chatd":
        return chatd_command(
            0,
            "--rate-limit",
            "0",
            "--db",
            db,
            "--log-level",
            "warning",
            "--max-clients",
            "20000",
            "--tls",
            "off",
            *_many_hosts(root),
            # e.g. CHATD_BENCH_ARGS="--history-max-per-room 1000" to measure retention
            *os.environ.get("CHATD_BENCH_ARGS", "").split(),
        )
    if kind in ("asyncio", "selectors"):
        return [
            sys.executable,
            str(ROOT / "bench" / f"baseline_{kind}.py"),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ]
    raise ValueError(kind)


class Server:
    """A server subprocess: started, parsed for its port, measured, and always killed."""

    def __init__(
        self,
        kind: str,
        cmd: list[str],
        cpus: set[int] | None,
        logdir: Path,
        wrap: list[str] | None = None,
        root: Path = ROOT,
    ) -> None:
        self.kind = kind
        self.root = root
        self.nice = 0
        self.cmd = (wrap or []) + cmd
        self.cpus = cpus
        self.out_path = logdir / f"{kind}.{os.getpid()}.{time.monotonic_ns()}.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.pid = 0

    def _child_setup(self) -> None:  # runs in the child, before exec
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        if self.nice:
            renice(self.nice)
        raise_nofile()

    def start(self, timeout: float = 20.0) -> Server:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.root) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                env=env,
                preexec_fn=self._child_setup,
                start_new_session=True,
            )  # Ctrl-C is ours to handle
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out_path.read_text(errors="replace")
            m = LISTEN_RE.search(text)
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.proc.returncode}:\n" + text[-2000:]
                )
            time.sleep(0.02)
        else:
            raise RuntimeError(f"{self.kind} did not print 'listening on' within {timeout}s")
        self.pid = self.find_server_pid()
        return self

    def find_server_pid(self) -> int:
        """The Python process itself (a wrapper such as py-spy forks it as a child)."""
        assert self.proc is not None
        pid = self.proc.pid
        for _ in range(50):
            try:
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                return pid
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm.startswith("python") or not kids:
                return pid
            pid = int(kids[0])
        return pid

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def settle(self, quiet: float = 0.01, step: float = 0.2, limit: float = 15.0) -> None:
        """Wait until the server is idle (join notices delivered, buffers flushed)."""
        deadline = time.monotonic() + limit
        last = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(step)
            now = self.cpu_seconds()
            if now - last <= quiet:
                return
            last = now

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGINT)  # graceful: lets a profiler write out
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.out_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def system_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine so far (all CPUs, from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def renice(increment: int) -> None:
    """Lower (negative: raise) this process's priority; ignored where not permitted."""
    try:
        os.nice(increment)
    except OSError:
        pass


def cpu_split() -> tuple[set[int] | None, list[int] | None]:
    """Server on one CPU, the load generator on the rest (if there are two or more)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, cpus[1:]
