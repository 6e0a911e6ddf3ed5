"""One load-generator client: its lifecycle states and a slotted record of its socket,
buffers and counters, which the worker's loop (bench/load_worker.py) updates in place
(a slot store is cheaper than a method call per event).
"""

from __future__ import annotations

import re
import socket
from array import array

from chatd.tls import TlsStream

# client states
CONNECTING, HELLO, JOINING, READY, DEAD = range(5)


class Client:
    __slots__ = (
        "idx",
        "sock",
        "fd",
        "state",
        "member",
        "sender",
        "checker",
        "hbuf",
        "out",
        "mask",
        "count",
        "prev_tilde",
        "tail",
        "snap0",
        "snap1",
        "error",
        # sender
        "sid",
        "seq",
        "inflight",
        "own_re",
        "sent",
        "acked",
        "acked0",
        "acked1",
        "next_due",
        "interval",
        "rtt",
        # checker
        "last_seq",
        "gaps",
        "reorders",
        "lat",
        "skipped",
        # TLS: the client's stream and its encrypted output
        "tls",
        "wire",
    )

    def __init__(self, idx: int, member: bool) -> None:
        self.idx = idx
        self.member = member
        self.sender = False
        self.checker = False
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = CONNECTING
        self.hbuf = b""
        self.out = bytearray()
        self.mask = 0
        self.count = 0
        self.prev_tilde = False
        self.tail = b""
        self.snap0 = self.snap1 = 0
        self.error = ""
        self.sid = -1
        self.seq = 0
        self.inflight = 0
        self.own_re: re.Pattern[bytes] | None = None
        self.sent = self.acked = self.acked0 = self.acked1 = 0
        self.next_due = 0
        self.interval = 0
        self.rtt = array("q")
        self.last_seq: list[int] = []
        self.gaps = self.reorders = self.skipped = 0
        self.lat = array("q")
        self.tls: TlsStream | None = None
        self.wire = bytearray()
