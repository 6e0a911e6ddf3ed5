"""The one place chatd (and its benchmarks) lift the open-file limit."""

from __future__ import annotations

import resource
import sys

__all__ = ["raise_fd_limit"]


def raise_fd_limit(wanted: int | None = None) -> int:
    """Lift the soft ``RLIMIT_NOFILE`` towards ``wanted`` (None: the hard limit), never
    above the hard limit and never lowering it. Returns the soft limit now in force
    (``sys.maxsize`` when unlimited); the caller decides whether it is enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted is None:
        target = hard
    else:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and (target == resource.RLIM_INFINITY or soft < target):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # the caller sees the limit it got
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft
