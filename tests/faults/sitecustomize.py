"""Fault injection for tests/test_abuse_server.py: encoding fails on a marker.

Put this directory first on ``PYTHONPATH`` of a *server process* and set
``CHATD_TEST_ENCODE_FAULT=1``: Python imports ``sitecustomize`` at start-up, and the JSON
codec's ``encode`` then raises for events carrying the marker. It stands for a bug in a
codec that no input check catches, to prove that such a bug costs one delivery and
nothing else. Without the variable, nothing is changed.
"""

from __future__ import annotations

import os

if os.environ.get("CHATD_TEST_ENCODE_FAULT"):
    from chatd.codecs.json import JsonCodec

    _encode = JsonCodec.encode

    def _faulty_encode(self: JsonCodec, event: object, rid: object = None) -> bytes:
        text = getattr(event, "text", None)
        if isinstance(text, str) and "ENCODE-FAIL-ALL" in text:
            raise RuntimeError("injected fault: every JSON copy of this event")
        if rid == "encode-fail":
            raise RuntimeError("injected fault: the copy carrying this request id")
        return _encode(self, event, rid)  # type: ignore[arg-type]

    JsonCodec.encode = _faulty_encode  # type: ignore[method-assign]
