"""Room messages, topics, private messages and history in cluster mode: part of
:class:`chatd.cluster.Cluster` (kept apart to keep files short; the design is in that
module's docstring).

A room message is checked by the hub, stored and published by the ``say`` script
(store before deliver; its stream id is its ``mid``) and delivered here once, in stream
order. A private message to another node's user is published on that node's channel.
A topic is kept in Redis' topic hash. A join's replay and ``history`` pages are read
from the room's stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import hiredis

from chatd.cluster_scripts import CHANNEL, PREFIX, mid_of, stream_id
from chatd.cluster_sync import RemoteView, _message
from chatd.config import Config
from chatd.hub import MAX_TOPIC_CHARS
from chatd.model import (
    Deliver,
    Error,
    ErrorCode,
    FetchHistory,
    HistoryEnd,
    HistoryReply,
    Message,
    PrivateMessage,
    PrivMsg,
    Replay,
    Say,
    Store,
    Topic,
)
from chatd.names import clean_line, fold, nfkc
from chatd.redis_link import LINK_DOWN

__all__ = ["ClusterMessages"]

logger = logging.getLogger(__name__)


def _stream(room: str) -> str:
    return PREFIX + "s:" + fold(room)


class ClusterMessages(RemoteView):
    """Mixed into :class:`chatd.cluster.Cluster`."""

    config: Config
    _replay: list[Message]

    # The Cluster's, used here.
    def _send(self, cid: int, callback: Callable[[object], None], *args: Any) -> None:
        raise NotImplementedError

    def _script(self, cid: int, name: str, callback: Any, keys: list[str], args: list[Any]) -> None:
        raise NotImplementedError

    def _error(self, cid: int, code: str, why: str, rid: object) -> None:
        raise NotImplementedError

    def _unavailable(self, cid: int, rid: object, in_flight: bool = False) -> None:
        raise NotImplementedError

    def _event(self, kind: str, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def _update(
        self,
        callback: Any,
        cid: int,
        event: str,
        stream: str = "",
        topic: tuple[str, str] | None = None,
        release: tuple[str, ...] = (),
    ) -> None:
        raise NotImplementedError

    def _topic(self, cid: int, cmd: Topic, wall: float) -> None:
        hub = self.hub
        assert cmd.topic is not None
        names = {fold(r): r for r in hub.rooms_of(cid)}
        room = cmd.room if cmd.room is not None else (hub.rooms_of(cid) or [""])[-1]
        key = fold(nfkc(room))
        topic = clean_line(cmd.topic)
        if key not in names or len(topic) > MAX_TOPIC_CHARS:
            self._apply(hub.handle(cid, cmd, wall))  # refused
            return
        if not self.ready:
            self._unavailable(cid, cmd.rid)
            return

        def done(reply: object) -> None:
            if reply is LINK_DOWN or isinstance(reply, hiredis.ReplyError):
                self._unavailable(cid, cmd.rid, in_flight=True)
            elif self._open(cid) is not None:
                self._apply(hub.handle(cid, replace(cmd, room=names[key]), self._wall()))

        event = self._event("topic", {"cid": cid, "room": names[key], "topic": topic})
        self._update(done, cid, event, topic=(key, topic))

    def _say(self, cid: int, cmd: Say, wall: float) -> None:
        actions = self.hub.handle(cid, cmd, wall)  # checks it; the mid comes from Redis
        stored = [a.message for a in actions if isinstance(a, Store)]
        if not stored:
            self._apply(actions)  # refused
            return
        if not self.ready:
            self._unavailable(cid, cmd.rid)
            return
        message = stored[0]
        body = {"room": message.room, "n": message.sender, "t": message.text, "ts": message.ts}
        if message.action:
            body["me"] = 1
        if message.notice:
            body["no"] = 1

        def done(reply: object) -> None:
            if reply is LINK_DOWN or isinstance(reply, hiredis.ReplyError):
                self._unavailable(cid, cmd.rid, in_flight=True)  # it may still have been stored
                return
            assert isinstance(reply, bytes)
            self._deliver(replace(message, mid=mid_of(reply)), cid, cmd.rid)

        data = json.dumps(body, separators=(",", ":"))
        args = [self.config.cluster_stream_maxlen, data, CHANNEL, self.node]
        self._script(cid, "say", done, [_stream(message.room)], args)

    def _deliver(self, message: Message, sender: int | None, rid: object) -> None:
        """A stored room message to the room's members here, once, in stream order."""
        key = fold(message.room)
        if message.mid <= self._last.get(key, 0):
            return
        cids = self.hub.room_cids(message.room)
        if not any(cid > 0 for cid in cids):
            return  # nobody here: its node(s) deliver; nothing to remember
        self._last[key] = message.mid
        reply_to = sender if rid is not None else None
        self._apply([Deliver(cids, message, rid, True, reply_to, message.room)])

    def _privmsg(self, cid: int, cmd: PrivMsg, wall: float) -> None:
        hub = self.hub
        target = hub.nick_holder(cmd.to)
        actions = hub.handle(cid, cmd, wall)
        if (
            target is None
            or target >= 0
            or any(isinstance(a, Deliver) and isinstance(a.event, Error) for a in actions)
        ):
            self._apply(actions)  # local, or refused
            return
        if not self.ready:
            self._unavailable(cid, cmd.rid)
            return
        where = next((k for k, v in self._remote.items() if v == target), None)
        event = next(a.event for a in actions if isinstance(a, Deliver) and target in a.cids)
        assert where is not None and isinstance(event, PrivateMessage)
        body = {
            "cid": where[1], "s": event.sender, "to": event.to, "t": event.text,
            "ts": event.ts, "no": event.notice, "me": event.action,
        }  # fmt: skip

        def done(reply: object) -> None:
            if reply is LINK_DOWN or isinstance(reply, hiredis.ReplyError):
                self._unavailable(cid, cmd.rid, in_flight=True)
            elif reply == 0:
                why = f"nobody called {cmd.to[:40]} is here"
                self._error(cid, ErrorCode.NO_SUCH_NICK, why, cmd.rid)
            else:
                self._apply(actions)  # the sender's echo (and away notice)

        payload = self._event("pm", body)
        self._send(cid, done, "PUBLISH", PREFIX + "pm:" + where[0], payload)

    # ------------------------------------------------------------------ history

    def replay(self, action: Replay) -> None:
        if action.cid < 0:
            return  # a remote client's join: its node replays
        replay = self.dispatch.fit(action.cid, self._replay, replay=True)
        for message in replay:
            self._apply([Deliver((action.cid,), message)])
        self._apply([Deliver((action.cid,), HistoryEnd(action.room, len(replay)))])

    def fetch_history(self, action: FetchHistory) -> None:
        cid, rid, room = action.cid, action.rid, action.room
        if action.before is not None and action.before <= (action.after or 0) + 1:
            self._apply([Deliver((cid,), HistoryReply(room, ()), rid=rid)])  # nothing between
            return
        if not self.ready:
            self._unavailable(cid, rid)
            return
        if action.after is not None:
            start = "(" + stream_id(action.after)
            end = "(" + stream_id(action.before) if action.before is not None else "+"
            args: list[Any] = ["XRANGE", _stream(room), start, end]
        else:
            end = "(" + stream_id(action.before) if action.before is not None else "+"
            args = ["XREVRANGE", _stream(room), end, "-"]

        def done(reply: object) -> None:
            if reply is LINK_DOWN:
                self._unavailable(cid, rid, in_flight=True)
                return
            if not isinstance(reply, list):  # a range Redis refuses: nothing in it
                logger.warning("cluster: history %s refused by Redis: %s", args, reply)
                reply = []
            entries = reply if action.after is not None else list(reversed(reply))
            messages = [m for e in entries if not (m := _message(e, room)).notice]
            page = self.dispatch.fit(cid, messages, newest=action.after is None)
            more = len(page) < len(messages)
            self._apply([Deliver((cid,), HistoryReply(room, tuple(page), more=more), rid=rid)])

        self._send(cid, done, *args, "COUNT", action.limit)
