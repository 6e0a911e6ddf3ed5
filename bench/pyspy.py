"""py-spy attached to chatd for a measured window (``python -m bench.run --profile DIR``),
and a summary of its collapsed stacks: self and inclusive shares per function.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path
from typing import Any

from bench.load_spec import Spec
from bench.server_procs import Server


def start_profiler(
    opts: argparse.Namespace, srv: Server, spec: Spec, kind: str, logdir: Path
) -> tuple[subprocess.Popen[bytes], Path] | None:
    """py-spy attached to the server for the measured window (chatd only)."""
    if not opts.profile or kind != "chatd":
        return None
    out_dir = Path(opts.profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{opts.current}-{kind}.txt"
    cmd = [
        "py-spy",
        "record",
        "--pid",
        str(srv.pid),
        "--duration",
        str(max(1, int(spec.duration))),
        "--rate",
        "200",
        "--format",
        "raw",
        "--nonblocking",
        "-o",
        str(path),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, path


def finish_profiler(spy: tuple[subprocess.Popen[bytes], Path]) -> dict[str, Any]:
    proc, path = spy
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not path.exists():
        return {"error": "py-spy wrote nothing (is ptrace allowed?)"}
    return {"file": str(path), **summarize_stacks(path)}


def summarize_stacks(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \((.*/)?([^/]+?):\d+\)$", r" (\2)", f) for f in stack.split(";")]
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for f in set(frames):
            incl_n[f] = incl_n.get(f, 0) + n

    def share(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(v / total, 4)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "self": share(self_n), "inclusive": share(incl_n)}
