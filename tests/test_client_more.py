"""The terminal client follows ``more: true`` on history pages (issue 10, finding 3).

The server cuts history replies at ``max_reply_bytes`` and marks them ``more``; a gap
fetch must go on from the last message of a short page, and /history must say that
older messages remain.
"""

from __future__ import annotations

import json

from test_client_core import feed, frame, msg, online, reconnect, texts


def test_gap_follows_a_short_page_marked_more() -> None:
    state = online()
    feed(state, msg(1))
    reconnect(state)
    (gap,) = feed(state, frame(type="joined", room="#lobby", topic="", members=["alice"])).frames
    page = [json.loads(msg(n)) for n in (2, 3)]  # short, but the server says there is more
    out = feed(state, frame(type="history", room="#lobby", id=gap["id"], messages=page, more=True))
    (more,) = out.frames
    assert more["after"] == 3
    shown = texts(out)  # each page is shown as it comes (only live messages wait)
    last = [json.loads(msg(4))]
    out = feed(state, frame(type="history", room="#lobby", id=more["id"], messages=last))
    assert shown + texts(out) == ["m2", "m3", "m4"]


def test_history_page_marked_more_says_so() -> None:
    state = online()
    feed(state, msg(10))
    (request,) = state.user_input("/history 500").frames
    page = [json.loads(msg(n, history=True)) for n in (8, 9)]
    out = feed(
        state, frame(type="history", room="#lobby", id=request["id"], messages=page, more=True)
    )
    assert texts(out)[:2] == ["m8", "m9"]
    assert "/history again" in texts(out)[-1]
    (again,) = state.user_input("/history").frames
    assert again["before"] == 8
