"""The fan-out in memory: actions in, bytes per recipient out (no socket, no server)."""

from __future__ import annotations

import json
import logging

import pytest

from chatd.codecs import Codec, JsonCodec, TextCodec
from chatd.fanout import Fanout
from chatd.model import Deliver, Event, JoinEvent, Message
from chatd.outpolicy import Flow


class Peer:
    """A recipient that keeps what it is given."""

    def __init__(self, cid: int, codec: Codec | None) -> None:
        self.cid = cid
        self.codec = codec
        self.flow = Flow()
        self.chunks: list[bytes] = []

    def admits(self, count: int) -> bool:
        return self.flow.admits(count)

    def queue(self, data: bytes) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode()

    @property
    def frames(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.text.splitlines()]


class CountingCodec(JsonCodec):
    """JSON, counting encodes; optionally failing (then under a cache key of its own)."""

    def __init__(self, fail: bool = False) -> None:
        self.encodes = 0
        self.fail = fail
        if fail:
            self.cache_key = "broken"

    def encode(self, event: Event, rid: object = None) -> bytes:
        if self.fail:
            raise RuntimeError("codec bug")
        self.encodes += 1
        return super().encode(event, rid)


def make(*peers: Peer) -> tuple[Fanout, dict[int, Peer]]:
    table = {p.cid: p for p in peers}
    return Fanout(table.get, TextCodec()), table


def msg(mid: int, room: str = "#a", text: str = "hi") -> Message:
    return Message(room, "alice", text, 1000.0, mid)


def test_room_messages_of_a_turn_are_one_blob_shared_by_every_same_codec_recipient() -> None:
    codec = CountingCodec()
    peers = [Peer(cid, codec) for cid in (1, 2, 3)]
    fan, _ = make(*peers)
    cids = (1, 2, 3)
    for mid in (1, 2, 3):
        fan.deliver(Deliver(cids, msg(mid), droppable=True, group="#a"))
    assert all(not p.chunks for p in peers) and fan  # batched until flush
    fan.flush()
    assert codec.encodes == 3  # once per message, not per recipient
    assert all(len(p.chunks) == 1 for p in peers)
    assert peers[0].chunks[0] is peers[1].chunks[0] is peers[2].chunks[0]
    assert [line.count('"mid"') for line in peers[0].text.splitlines()] == [1, 1, 1]


def test_the_senders_copy_carries_its_request_id_and_nobody_elses_does() -> None:
    json_peer, other, text_peer = Peer(1, JsonCodec()), Peer(2, JsonCodec()), Peer(3, None)
    fan, _ = make(json_peer, other, text_peer)
    cids = (1, 2, 3)
    fan.deliver(Deliver(cids, msg(1), droppable=True, group="#a"))
    fan.deliver(Deliver(cids, msg(2), rid="r2", droppable=True, reply_to=1, group="#a"))
    fan.flush()
    assert [f.get("id") for f in json_peer.frames] == [None, "r2"]
    assert [f.get("id") for f in other.frames] == [None, None]
    assert "<alice> hi" in text_peer.text  # no codec yet: the fallback (text)
    # Not batched (a direct reply): rid on every copy when reply_to is None.
    fan.deliver(Deliver((2,), JoinEvent("#a", "bob"), rid=7))
    assert other.frames[-1]["id"] == 7


def test_other_events_keep_their_place_between_batched_room_messages() -> None:
    a, b = Peer(1, JsonCodec()), Peer(2, JsonCodec())
    fan, _ = make(a, b)
    fan.deliver(Deliver((1, 2), msg(1), droppable=True, group="#a"))
    fan.deliver(Deliver((1, 2), JoinEvent("#a", "carol")))  # flushes the batch first
    fan.deliver(Deliver((1, 2), msg(2), droppable=True, group="#a"))
    fan.flush()
    assert [f["type"] for f in a.frames] == ["msg", "join", "msg"]


def test_a_group_whose_members_change_within_a_turn_keeps_the_order() -> None:
    a, b = Peer(1, JsonCodec()), Peer(2, JsonCodec())
    fan, _ = make(a, b)
    fan.deliver(Deliver((1,), msg(1), droppable=True, group="#a"))
    fan.deliver(Deliver((1, 2), msg(2), droppable=True, group="#a"))  # b joined meanwhile
    fan.flush()
    assert [f["mid"] for f in a.frames] == [1, 2] and [f["mid"] for f in b.frames] == [2]


def test_a_recipient_over_its_soft_limit_is_skipped_and_counted() -> None:
    a, b = Peer(1, JsonCodec()), Peer(2, JsonCodec())
    b.flow.over_soft_since = 5.0
    fan, _ = make(a, b)
    for mid in (1, 2):
        fan.deliver(Deliver((1, 2), msg(mid), droppable=True, group="#a"))
    fan.flush()
    fan.deliver(Deliver((1, 2), JoinEvent("#a", "carol")))  # never skipped
    assert not b.text.count('"msg"') and b.flow.skipped == 2 and '"join"' in b.text
    assert a.text.count('"msg"') == 2


def test_gone_recipients_are_passed_over() -> None:
    a = Peer(1, JsonCodec())
    fan, table = make(a)
    fan.deliver(Deliver((1, 2, 3), msg(1), droppable=True, group="#a"))
    fan.flush()
    assert a.text.count('"msg"') == 1


def test_a_failure_for_one_recipient_costs_only_its_delivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, bad, later = Peer(1, CountingCodec()), Peer(2, CountingCodec(fail=True)), Peer(3, None)
    fan, _ = make(good, bad, later)
    with caplog.at_level(logging.ERROR, logger="chatd.fanout"):
        for mid in (1, 2):
            fan.deliver(Deliver((1, 2, 3), msg(mid), droppable=True, group="#a"))
            fan.flush()
        fan.deliver(Deliver((2, 1), JoinEvent("#a", "dave")))
    assert good.text.count('"msg"') == 2 and '"join"' in good.text
    assert later.text.count("<alice> hi") == 2
    assert not bad.chunks and fan.dropped == 3
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 3 and all("cannot encode" in m and "#2" in m for m in logged)
    assert fan.stats["bugs"] == 3


def test_one_bad_event_in_a_batch_costs_only_that_event() -> None:
    class Picky(JsonCodec):
        def encode(self, event: Event, rid: object = None) -> bytes:
            if isinstance(event, Message) and event.text == "bad":
                raise ValueError("codec bug")
            return super().encode(event, rid)

    a, b = Peer(1, Picky()), Peer(2, Picky())
    fan, _ = make(a, b)
    for mid, text in ((1, "ok"), (2, "bad"), (3, "fine")):
        fan.deliver(Deliver((1, 2), msg(mid, text=text), droppable=True, group="#a"))
    fan.flush()
    assert [f["text"] for f in a.frames] == ["ok", "fine"] == [f["text"] for f in b.frames]
    assert fan.dropped == 2
