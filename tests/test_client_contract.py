"""Contract: every event the server's JSON codec can write is understood by the client.

Each :class:`chatd.model.Event` subclass gets a sample; ``JsonCodec`` encodes it and the
client decodes it to a typed frame (no field refused) and has a handler for it. A new
event type in the server fails :func:`test_every_event_type_has_a_sample` until it is
added here, and then the decode test until the client understands it.
"""

from __future__ import annotations

import json

import pytest

from chatd import model
from chatd.codecs.json import JsonCodec
from client import frames, handlers
from client.core import ChatState, Limits

MSG = model.Message("#lobby", "bob", "hi alice", 1700000000.5, 7)

SAMPLES: dict[type[model.Event], model.Event] = {
    model.Welcome: model.Welcome(
        "alice",
        "chatd",
        ("hello",),
        limits=(("max_text_chars", 300), ("max_line_bytes", 1000)),
        resume="token",
        account="alice",
    ),
    model.Joined: model.Joined("#lobby", "a topic", ("alice", "bob"), away=("bob",)),
    model.JoinEvent: model.JoinEvent("#lobby", "carol"),
    model.PartEvent: model.PartEvent("#lobby", "bob", "bye"),
    model.Message: MSG,
    model.PrivateMessage: model.PrivateMessage("bob", "alice", "psst", 1700000000.0),
    model.NickEvent: model.NickEvent("bob", "bobby"),
    model.WhoReply: model.WhoReply("#lobby", ("alice", "bob")),
    model.RoomsReply: model.RoomsReply((model.RoomInfo("#lobby", 2, "t"),)),
    model.TopicEvent: model.TopicEvent("#lobby", "new topic", "bob"),
    model.Pong: model.Pong(),
    model.QuitEvent: model.QuitEvent("bob", "gone"),
    model.Error: model.Error("bad_request", "no"),
    model.Skipped: model.Skipped(3),
    model.Shutdown: model.Shutdown("maintenance"),
    model.AwayNotice: model.AwayNotice("bob", "lunch"),
    model.Probe: model.Probe(),
    model.Notice: model.Notice("server news"),
    model.HistoryReply: model.HistoryReply("#lobby", (MSG,)),
    model.HistoryEnd: model.HistoryEnd("#lobby", 1),
    model.WhoisReply: model.WhoisReply("bob", ("#lobby",), "lunch", 5),
    model.AwayReply: model.AwayReply(True),
    model.AwayEvent: model.AwayEvent("bob", True),
    model.StatsReply: model.StatsReply(3, 1, 2, 5),
    model.AccountEvent: model.AccountEvent("alice", "identified"),
    # moderation (docs/moderation.md)
    model.KickEvent: model.KickEvent("#lobby", "bob", "alice", "flooding"),
    model.ModeEvent: model.ModeEvent("#lobby", "alice", "+o", ("bob",)),
    model.BanListReply: model.BanListReply(
        "#lobby", (model.BanInfo("bob!*@*", "alice", 1700000000.0, None, "spam"),)
    ),
    model.InviteEvent: model.InviteEvent("#lobby", "bob", "alice"),
    model.OperEvent: model.OperEvent("boss"),
    model.ModLogReply: model.ModLogReply(
        (model.ModLogEntry(1700000000.0, "alice", "kick", "bob", "#lobby", "flooding"),)
    ),
}


def _all_events() -> list[type[model.Event]]:
    found: list[type[model.Event]] = []
    todo = list(model.Event.__subclasses__())
    while todo:
        cls = todo.pop()
        if getattr(model, cls.__name__, None) is cls:  # not the pre-slots copy of a dataclass
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_event_type_has_a_sample() -> None:
    assert set(_all_events()) == set(SAMPLES)


@pytest.mark.parametrize("event", SAMPLES.values(), ids=lambda e: type(e).__name__)
def test_the_client_decodes_and_handles_every_event(event: model.Event) -> None:
    line = JsonCodec().encode(event, rid=12).decode()
    obj = frames.parse(line.rstrip("\n"))
    frame = frames.decode(obj, Limits())
    assert frame is not None, f"the client does not know {obj['type']!r}"
    assert type(frame) in handlers.HANDLERS
    state = ChatState("alice", server="h:1")
    state.connected()
    state.server_line(line.rstrip("\n"))  # must not raise


def test_welcome_limits_are_read() -> None:
    state = ChatState("alice", server="h:1")
    state.connected()
    state.server_line(JsonCodec().encode(SAMPLES[model.Welcome]).decode().rstrip("\n"))
    assert state.registered
    assert (state.limits.max_text_chars, state.limits.max_line_bytes) == (300, 1000)
    state.server_line(json.dumps({"type": "joined", "room": "#lobby", "topic": "", "members": []}))
    assert state.user_input("x" * 301).lines[0].text.startswith("message too long")
    assert state.user_input("x" * 300).frames
    # a longer message than advertised is cut to the limit when shown
    long = model.Message("#lobby", "bob", "y" * 5000, 1.0, 1)
    out = state.server_line(JsonCodec().encode(long).decode().rstrip("\n"))
    (line,) = out.lines
    assert line.text.startswith("y" * 300) and len(line.text) < 310


def test_the_real_hub_advertises_its_limits() -> None:
    from chatd.config import Config
    from chatd.hub import Hub

    config = Config(max_text_chars=123)
    hub = Hub(config)
    hub.connect(1, 0.0)
    welcome = next(
        a.event
        for a in hub.handle(1, model.Hello("alice"), 0.0)
        if isinstance(a, model.Deliver) and isinstance(a.event, model.Welcome)
    )
    line = JsonCodec().encode(welcome).decode().rstrip("\n")
    state = ChatState("alice")
    state.connected()
    state.server_line(line)
    assert state.limits.max_text_chars == 123


def test_the_banner_names_a_chat_command_that_works_here() -> None:
    import os
    import shutil
    import subprocess

    from chatd.startup import _how_to_join

    hint = _how_to_join("127.0.0.1", 7777)
    command = hint.split()[2]
    assert shutil.which(command) or os.access(command, os.X_OK), hint
    done = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "chatd server" in done.stdout
