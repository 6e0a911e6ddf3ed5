"""A LAN of our own for multicast tests: ``Lan`` (bench/netns.py, where
bench/discovery_latency.py uses it too) and ``lan_or_skip``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from bench.netns import Lan

__all__ = ["Lan", "lan_or_skip"]


def lan_or_skip(tag: str) -> Lan:
    """A fresh :class:`Lan`, or a skip saying why one cannot be made here."""
    if shutil.which("ip") is None:
        pytest.skip("needs 'ip' (iproute2) to make network namespaces")
    if os.geteuid() != 0:
        pytest.skip("making network namespaces needs root (CI runs as root)")
    try:
        return Lan(tag)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        pytest.skip(f"cannot make network namespaces here: {detail.strip()}")
