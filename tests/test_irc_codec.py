"""The IRC codec, pure: parsing, rendering, registration, and numerics against a real hub.

No sockets. ``Net`` wires codecs to a :class:`~chatd.hub.Hub` in memory through the
server's own fan-out (:mod:`chatd.fanout`), and checks
on every delivery that connections sharing a cache key really get the same bytes and
that every line is CRLF-terminated and at most 512 bytes without its tags.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.codecs import Codec
from chatd.codecs.irc import (
    CAPABILITIES,
    IrcCodec,
    IrcLines,
    IrcMessage,
    format_line,
    parse_line,
    split_text,
)
from chatd.codecs.json import JsonCodec
from chatd.config import Config
from chatd.fanout import Fanout
from chatd.hub import Hub
from chatd.model import (
    Action,
    Close,
    Command,
    Deliver,
    Echo,
    Error,
    ErrorCode,
    Hello,
    HistoryEnd,
    Join,
    Joined,
    Message,
    Part,
    PrivateMessage,
    PrivMsg,
    Quit,
    Replay,
    Say,
    Store,
    Topic,
    Welcome,
    Who,
    Whois,
)
from chatd.outpolicy import Flow
from chatd.ratelimit import command_cost

# --------------------------------------------------------------------------- harness


def _check_lines(data: bytes) -> None:
    if not data:
        return
    assert data.endswith(b"\r\n"), data
    for line in data[:-2].split(b"\r\n"):
        body = line.split(b" ", 1)[1] if line.startswith(b"@") else line
        assert len(body) + 2 <= 512, (len(body), line[:80])
        assert b"\n" not in line and b"\r" not in line and b"\0" not in line


class _Peer:
    """One connection of ``Net`` as the fan-out sees it; its lines go to ``net.out``."""

    def __init__(self, net: Net, cid: int) -> None:
        self.net, self.cid = net, cid
        self.flow = Flow()

    @property
    def codec(self) -> Codec:
        return self.net.codecs[self.cid]  # type: ignore[return-value]

    def admits(self, count: int) -> bool:
        return True

    def queue(self, data: bytes) -> None:
        if isinstance(self.codec, IrcCodec):
            _check_lines(data)
            self.net.out[self.cid] += data.decode().split("\r\n")[:-1]
        else:
            self.net.out[self.cid] += data.decode().splitlines()


class Net:
    """Codecs and a hub in memory, delivering like chatd.server does."""

    def __init__(self, **config: object) -> None:
        self.hub = Hub(Config(server_name="srv", **config))  # type: ignore[arg-type]
        self.codecs: dict[int, object] = {}
        self.out: dict[int, list[str]] = {}
        self.closed: list[int] = []
        self.history: list[Message] = []
        self.fanout = Fanout(self._peer, JsonCodec())

    def connect(self, cid: int, codec: object | None = None) -> int:
        self.codecs[cid] = codec or IrcCodec("srv")
        self.out[cid] = []
        self.hub.connect(cid, 0.0)
        return cid

    def _peer(self, cid: int) -> _Peer | None:
        return _Peer(self, cid) if cid in self.codecs else None

    def send(self, cid: int, line: str | bytes, now: float = 1000.0) -> list[str]:
        """Feed one line; return the lines ``cid`` received because of it."""
        before = len(self.out[cid])
        codec = self.codecs[cid]
        raw = line.encode() if isinstance(line, str) else line
        for command in codec.decode(raw):  # type: ignore[attr-defined]
            if isinstance(command, Echo):
                self._deliver(Deliver((cid,), command.event, rid=command.rid))
            else:
                self._apply(self.hub.handle(cid, command, now))
        return self.out[cid][before:]

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Deliver):
                self._deliver(action)
            elif isinstance(action, Store):
                self.history.append(action.message)
            elif isinstance(action, Replay):
                old = [m for m in self.history if m.room.lower() == action.room.lower()]
                for m in old[-action.limit :]:
                    self._deliver(Deliver((action.cid,), _as_history(m)))
                self._deliver(Deliver((action.cid,), HistoryEnd(action.room, len(old))))
            elif isinstance(action, Close):
                self.closed.append(action.cid)

    def _deliver(self, action: Deliver) -> None:
        self.fanout.deliver(action)  # the server's own fan-out (chatd.fanout)
        self.fanout.flush()
        assert self.fanout.dropped == 0, "a delivery failed (see the logged traceback)"
        # Connections sharing a cache key must really get the same bytes.
        encoded: dict[object, bytes] = {}
        shared_rid = action.rid if action.reply_to is None else None
        for cid in action.cids:
            codec = self.codecs[cid]
            if cid != action.reply_to:
                data = codec.encode(action.event, shared_rid)  # type: ignore[attr-defined]
                key = codec.cache_key  # type: ignore[attr-defined]
                assert encoded.setdefault(key, data) == data, "same cache key, different bytes"

    def irc_user(self, cid: int, nick: str, *rooms: str, caps: str = "") -> int:
        self.connect(cid)
        if caps:
            self.send(cid, "CAP LS 302")
            self.send(cid, f"CAP REQ :{caps}")
        self.send(cid, f"NICK {nick}")
        got = self.send(cid, "USER u 0 * :Real Name")
        if caps:
            got = self.send(cid, "CAP END")
        assert any(" 001 " in line for line in got), got
        for room in rooms:
            self.send(cid, f"JOIN {room}")
        return cid


def _as_history(m: Message) -> Message:
    return Message(m.room, m.sender, m.text, m.ts, m.mid, action=m.action, history=True)


def numerics(lines: list[str]) -> list[str]:
    return [line.split(" ")[1] for line in lines if re.match(r":\S+ \d{3} ", line)]


# --------------------------------------------------------------------------- parsing


def test_parse_plain_command_with_trailing() -> None:
    assert parse_line(b"PRIVMSG #room :hello there") == IrcMessage(
        "PRIVMSG", ("#room", "hello there")
    )


def test_parse_tags_source_and_escapes() -> None:
    msg = parse_line(
        b"@time=2024-01-01T00:00:00Z;+draft/x=a\\sb\\:c\\\\d\\;flag :nick!u@h privmsg #a :hi"
    )
    assert msg is not None
    assert msg.command == "PRIVMSG"
    assert msg.source == "nick!u@h"
    assert dict(msg.tags) == {"time": "2024-01-01T00:00:00Z", "+draft/x": "a b;c\\d", "flag": ""}
    assert msg.params == ("#a", "hi")


def test_parse_tag_value_with_trailing_backslash_drops_it() -> None:
    msg = parse_line(b"@k=v\\ PING x")
    assert msg is not None and dict(msg.tags) == {"k": "v"}


def test_parse_empty_trailing_is_an_empty_parameter() -> None:
    assert parse_line(b"TOPIC #a :") == IrcMessage("TOPIC", ("#a", ""))


def test_parse_missing_parameters() -> None:
    assert parse_line(b"JOIN") == IrcMessage("JOIN", ())
    assert parse_line(b"PRIVMSG #a") == IrcMessage("PRIVMSG", ("#a",))


def test_parse_excess_spaces() -> None:
    assert parse_line(b"   PRIVMSG    #a     :  spaced  text ") == IrcMessage(
        "PRIVMSG", ("#a", "  spaced  text ")
    )
    assert parse_line(b"USER  u   0  *   realname") == IrcMessage(
        "USER", ("u", "0", "*", "realname")
    )


def test_parse_fifteenth_parameter_takes_the_rest() -> None:
    words = " ".join(str(i) for i in range(20))
    msg = parse_line(f"X {words}".encode())
    assert msg is not None
    assert len(msg.params) == 15
    assert msg.params[-1] == "14 15 16 17 18 19"


@pytest.mark.parametrize("line", [b"", b"   ", b"@a=b", b"@a=b :source", b":source   "])
def test_parse_lines_without_a_command(line: bytes) -> None:
    assert parse_line(line) is None


def test_parse_non_utf8_is_read_as_cp1252() -> None:
    msg = parse_line(b"PRIVMSG #a :caf\xe9 \x80")
    assert msg is not None and msg.params[1] == "café €"
    broken = parse_line(b"PRIVMSG #a :\x81 \xff\xfe")
    assert broken is not None and broken.params[1] == "\ufffd ÿþ"


@given(st.binary(max_size=200))
def test_parse_never_raises(data: bytes) -> None:
    parse_line(data.replace(b"\n", b""))


@given(st.binary(max_size=200))
def test_decode_never_raises_before_or_after_registration(data: bytes) -> None:
    codec = IrcCodec("srv")
    codec.decode(data)
    codec.observe(Welcome("bob", "srv"))
    codec.decode(data)


# --------------------------------------------------------------------------- rendering


def test_format_line_trailing_and_tags() -> None:
    assert format_line("PRIVMSG", "#a", trailing="") == "PRIVMSG #a :"
    assert format_line("PRIVMSG", "#a", trailing=":-)", source="n!u@h") == ":n!u@h PRIVMSG #a ::-)"
    assert (
        format_line("PING", trailing="x", tags={"time": "t", "k": "a;b c\\"})
        == "@time=t;k=a\\:b\\sc\\\\ PING :x"
    )


def test_format_line_neutralises_line_breaks_and_nul() -> None:
    assert format_line("NOTICE", "a\rb", trailing="x\r\nQUIT\0") == "NOTICE a b :x  QUIT "


def test_format_line_shortens_a_long_trailing_at_a_character() -> None:
    line = format_line("332", "me", "#a", trailing="é" * 400, source="srv")
    assert len(line.encode()) <= 510
    assert line.endswith("é")


@given(st.text(max_size=3000), st.integers(min_value=4, max_value=500))
def test_split_text_keeps_every_character_within_budget(text: str, budget: int) -> None:
    pieces = split_text(text, budget)
    assert all(len(piece.encode()) <= budget for piece in pieces)
    assert all("\n" not in piece for piece in pieces)
    squeeze = re.compile(r"\s")
    assert squeeze.sub("", "".join(pieces)) == squeeze.sub("", text)


def test_split_text_prefers_spaces() -> None:
    assert split_text("aaaa bbbb cccc", 10) == ["aaaa bbbb", "cccc"]
    assert split_text("one\n\ntwo", 10) == ["one", "two"]


# --------------------------------------------------------------------------- registration


def test_registration_sends_hello_after_nick_and_user() -> None:
    codec = IrcCodec("srv")
    assert codec.decode(b"NICK bob") == []
    [hello] = codec.decode(b"USER bob 0 * :Bob B")
    assert isinstance(hello, Hello) and hello.nick == "bob" and hello.password is None


def test_cap_negotiation_suspends_registration_until_cap_end() -> None:
    codec = IrcCodec("srv")
    [ls] = codec.decode(b"CAP LS 302")
    assert isinstance(ls, Echo) and isinstance(ls.event, IrcLines)
    assert ls.event.lines == (":srv CAP * LS :" + " ".join(CAPABILITIES),)
    assert codec.decode(b"NICK bob") == []
    assert codec.decode(b"USER bob 0 * :Bob") == []
    [ack] = codec.decode(b"CAP REQ :server-time echo-message")
    assert isinstance(ack, Echo) and isinstance(ack.event, IrcLines)
    assert ack.event.lines == (":srv CAP * ACK :server-time echo-message",)
    [nak] = codec.decode(b"CAP REQ :server-time batch")
    assert isinstance(nak, Echo) and isinstance(nak.event, IrcLines)
    assert "NAK" in nak.event.lines[0]
    assert codec.caps == {"server-time", "echo-message"}
    [hello] = codec.decode(b"CAP END")
    assert isinstance(hello, Hello)


def test_cap_req_can_remove_and_list() -> None:
    codec = IrcCodec("srv")
    codec.decode(b"CAP REQ :server-time message-tags")
    codec.decode(b"CAP REQ :-server-time")
    [listed] = codec.decode(b"CAP LIST")
    assert isinstance(listed, Echo) and isinstance(listed.event, IrcLines)
    assert listed.event.lines == (":srv CAP * LIST :message-tags",)


def test_password_is_forwarded_only_when_the_server_has_one() -> None:
    codec = IrcCodec("srv", password_required=True)
    codec.decode(b"PASS s3cret")
    codec.decode(b"NICK bob")
    [hello] = codec.decode(b"USER bob 0 * :Bob")
    assert isinstance(hello, Hello) and hello.password == "s3cret"
    open_codec = IrcCodec("srv")
    open_codec.decode(b"PASS whatever")
    open_codec.decode(b"NICK bob")
    [hello] = open_codec.decode(b"USER bob 0 * :Bob")
    assert isinstance(hello, Hello) and hello.password is None


def test_registration_flow_against_the_hub() -> None:
    net = Net(motd="line one\\nline two")
    net.connect(1)
    assert numerics(net.send(1, "JOIN #a")) == ["451"]
    assert numerics(net.send(1, "USER u 0 *")) == ["461"]
    net.send(1, "NICK bob")
    got = net.send(1, "USER u 0 * :Bob")
    lusers = ["251", "252", "253", "254", "255", "265", "266"]
    welcome = ["001", "002", "003", "004", "005", "005", *lusers]
    assert numerics(got) == [*welcome, "375", "372", "372", "376"]
    assert got[0] == ":srv 001 bob :Welcome to chatd on srv, bob"
    assert re.fullmatch(r":srv 004 bob srv chatd-\S+ io bikmnoqtv bkoqv", got[3]), got[3]
    isupport = " ".join(line for line in got if " 005 " in line)
    for token in ("CHANTYPES=#", "NICKLEN=24", "CHANNELLEN=33", "CASEMAPPING=rfc1459"):
        assert token in isupport.split(" ")
    assert numerics(net.send(1, "USER u 0 * :again")) == ["462"]
    assert numerics(net.send(1, "PASS x")) == ["462"]


def test_no_motd_is_422() -> None:
    net = Net()
    net.connect(1)
    net.send(1, "NICK bob")
    assert numerics(net.send(1, "USER u 0 * :Bob"))[-1] == "422"


def test_nick_in_use_and_erroneous_during_registration_then_retry() -> None:
    net = Net()
    net.irc_user(1, "bob")
    net.connect(2)
    net.send(2, "NICK bob")
    got = net.send(2, "USER u 0 * :x")
    assert got[0].startswith(":srv 433 * bob :")
    assert numerics(net.send(2, "NICK 9lives")) == ["432"]
    assert numerics(net.send(2, "NICK bobby"))[0] == "001"
    assert net.codecs[2].nick == "bobby"  # type: ignore[attr-defined]


def test_wrong_password_is_464_and_closes_after_three() -> None:
    net = Net(password="pw", max_password_failures=3)
    net.codecs[1] = IrcCodec("srv", password_required=True)
    net.out[1] = []
    net.hub.connect(1, 0.0)
    net.send(1, "NICK bob")
    assert numerics(net.send(1, "USER u 0 * :x")) == ["464"]
    net.send(1, "PASS nope")
    assert numerics(net.send(1, "NICK bob")) == ["464"]
    net.send(1, "PASS pw")
    assert numerics(net.send(1, "NICK bob"))[0] == "001"
    assert net.closed == []


def test_ping_pong_before_and_after_registration() -> None:
    net = Net()
    net.connect(1)
    assert net.send(1, "PING :abc") == [":srv PONG srv :abc"]
    assert numerics(net.send(1, "PING")) == ["409"]
    assert net.send(1, "PONG :whatever") == []


def test_quit_says_error_then_leaves() -> None:
    net = Net()
    net.irc_user(1, "bob", "#a")
    net.irc_user(2, "ann", "#a")
    got = net.send(1, "QUIT :bye now")
    assert got == ["ERROR :Closing link: bob (Quit: bye now)"]
    assert net.closed == [1]
    assert net.out[2][-1] == ":bob!bob@chatd QUIT :Quit: bye now"


# --------------------------------------------------------------------------- commands


def test_join_renders_join_topic_names_and_others_see_join() -> None:
    net = Net()
    net.irc_user(1, "ann", "#Room")
    net.send(1, "TOPIC #room :lunch at noon")
    net.irc_user(2, "bob")
    got = net.send(2, "JOIN #room")
    assert got == [
        ":bob!bob@chatd JOIN #Room",
        ":srv 332 bob #Room :lunch at noon",
        ":srv 353 bob = #Room :ann bob",
        ":srv 366 bob #Room :End of /NAMES list",
    ]
    assert net.out[1][-1] == ":bob!bob@chatd JOIN #Room"
    assert net.send(2, "JOIN #ROOM") == []  # already there: nothing, as IRC servers do


def test_join_several_and_zero_parts_all() -> None:
    net = Net()
    net.irc_user(1, "ann")
    got = net.send(1, "JOIN #a,#b,,#c key1,key2")
    assert [line for line in got if " JOIN " in line] == [
        ":ann!ann@chatd JOIN #a",
        ":ann!ann@chatd JOIN #b",
        ":ann!ann@chatd JOIN #c",
    ]
    got = net.send(1, "JOIN 0")
    assert got == [":ann!ann@chatd PART #a", ":ann!ann@chatd PART #b", ":ann!ann@chatd PART #c"]
    assert net.hub.rooms_of(1) == []


def test_many_names_are_split_over_several_353_lines() -> None:
    net = Net(rate_limit=0)
    for cid in range(1, 61):
        net.irc_user(cid, f"user_with_long_nick_{cid:03d}", "#big")
    got = net.send(1, "NAMES #big")
    assert numerics(got).count("353") >= 3 and numerics(got)[-1] == "366"
    names = " ".join(line.split(" :", 1)[1] for line in got if " 353 " in line).split()
    assert len(names) == 60


def test_channel_message_reaches_others_not_the_sender_without_echo_message() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.irc_user(2, "bob", "#a")
    assert net.send(1, "PRIVMSG #a :hello bob") == []
    assert net.out[2][-1] == ":ann!ann@chatd PRIVMSG #a :hello bob"
    net.send(1, "NOTICE #a :a notice")
    assert net.out[2][-1] == ":ann!ann@chatd NOTICE #a :a notice"


def test_echo_message_server_time_and_msgid() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a", caps="echo-message server-time message-tags")
    net.irc_user(2, "bob", "#a")
    got = net.send(1, "PRIVMSG #a :hi", now=1700000000.5)
    msgid = 1700000000500 << 10  # the mid: milliseconds since the epoch, then a sequence
    assert got == [f"@time=2023-11-14T22:13:20.500Z;msgid={msgid} :ann!ann@chatd PRIVMSG #a :hi"]
    assert net.out[2][-1] == ":ann!ann@chatd PRIVMSG #a :hi"


def test_action_and_ctcp_and_formatting() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.irc_user(2, "bob", "#a")
    net.send(1, "PRIVMSG #a :\x01ACTION waves\x01")
    assert net.out[2][-1] == ":ann!ann@chatd PRIVMSG #a :\x01ACTION waves\x01"
    before = list(net.out[2])
    assert net.send(1, "PRIVMSG bob :\x01VERSION\x01") == []
    assert net.out[2] == before
    net.send(1, "PRIVMSG #a :\x02bold\x02 \x0304,12red\x03 plain")
    assert net.out[2][-1] == ":ann!ann@chatd PRIVMSG #a :bold red plain"


def test_long_and_multiline_texts_from_json_are_split_not_truncated() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.connect(2, JsonCodec())
    net.send(2, '{"op":"hello","nick":"jay"}')
    net.send(2, '{"op":"join","room":"#a"}')
    text = ("word " * 250).strip() + "\nsecond line\n\nthird é" + "é" * 500
    net.send(2, '{"op":"say","room":"#a","text":' + __import__("json").dumps(text) + "}")
    got = [line for line in net.out[1] if " PRIVMSG " in line]
    assert len(got) >= 6
    texts = [line.split(" :", 1)[1] for line in got]
    assert re.sub(r"\s", "", "".join(texts)) == re.sub(r"\s", "", text)
    assert "second line" in texts


def test_private_messages_and_notices() -> None:
    net = Net()
    net.irc_user(1, "ann")
    net.irc_user(2, "bob")
    assert net.send(1, "PRIVMSG bob :psst") == []
    assert net.out[2][-1] == ":ann!ann@chatd PRIVMSG bob :psst"
    net.send(1, "NOTICE bob :fyi")
    assert net.out[2][-1] == ":ann!ann@chatd NOTICE bob :fyi"
    net.send(1, "PRIVMSG bob :\x01ACTION nods\x01")
    assert net.out[2][-1] == ":ann!ann@chatd PRIVMSG bob :\x01ACTION nods\x01"  # stays an action
    assert net.send(1, "PRIVMSG ann :note to self") == [":ann!ann@chatd PRIVMSG ann :note to self"]


def test_private_echo_with_echo_message() -> None:
    net = Net()
    net.irc_user(1, "ann", caps="echo-message")
    net.irc_user(2, "bob")
    assert net.send(1, "PRIVMSG bob :psst") == [":ann!ann@chatd PRIVMSG bob :psst"]


def test_away_reply_and_whois() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a", "#b")
    net.irc_user(2, "bob")
    assert numerics(net.send(1, "AWAY :lunch")) == ["306"]
    got = net.send(2, "WHOIS ann")
    assert numerics(got) == ["311", "319", "312", "301", "317", "318"]
    assert ":srv 319 bob ann :#a #b" in got and ":srv 301 bob ann :lunch" in got
    messaged = net.send(2, "PRIVMSG ann :are you there?")  # messaging an away user: 301
    assert ":srv 301 bob ann :lunch" in messaged
    assert numerics(net.send(1, "AWAY")) == ["305"]


def test_who_names_list_topic() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.irc_user(2, "bob", "#a", "#b")
    got = net.send(1, "WHO #a")
    assert got == [
        ":srv 352 ann #a u chatd srv ann H :0 Real Name",
        ":srv 352 ann #a u chatd srv bob H :0 Real Name",
        ":srv 315 ann #a :End of /WHO list",
    ]
    assert numerics(net.send(1, "WHO bob")) == ["352", "315"]
    assert numerics(net.send(1, "WHO nobody")) == ["315"]
    assert numerics(net.send(1, "WHO #nowhere")) == ["315"]
    assert numerics(net.send(1, "NAMES #b")) == ["353", "366"]
    assert numerics(net.send(1, "NAMES #nowhere")) == ["366"]
    assert numerics(net.send(1, "LIST")) == ["321", "322", "322", "323"]
    assert numerics(net.send(1, "LIST #b")) == ["321", "322", "323"]
    assert numerics(net.send(1, "TOPIC #a")) == ["331"]
    net.send(2, "TOPIC #a :new topic")
    assert net.out[1][-1] == ":bob!bob@chatd TOPIC #a :new topic"
    assert net.send(1, "TOPIC #a") == [":srv 332 ann #a :new topic"]


def test_nick_change_is_seen_by_self_and_room() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.irc_user(2, "bob", "#a")
    assert net.send(1, "NICK anna") == [":ann!ann@chatd NICK :anna"]
    assert net.out[2][-1] == ":ann!ann@chatd NICK :anna"
    assert net.codecs[1].cache_key != ("irc", "ann", frozenset())  # type: ignore[attr-defined]
    net.send(1, "PRIVMSG #a :as anna")
    assert net.out[2][-1] == ":anna!anna@chatd PRIVMSG #a :as anna"


def test_part_with_reason() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.irc_user(2, "bob", "#a")
    assert net.send(1, "PART #a :gone fishing") == [":ann!ann@chatd PART #a :gone fishing"]
    assert net.out[2][-1] == ":ann!ann@chatd PART #a :gone fishing"
    assert net.send(1, "PRIVMSG #a :still here?") == [
        ":srv 404 ann #a :Cannot send to channel: join it first"
    ]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("PRIVMSG nobody :hi", ["401"]),
        ("PRIVMSG", ["411"]),
        ("PRIVMSG #a", ["412"]),
        ("PRIVMSG #a :", ["412"]),
        ("NOTICE nobody :hi", []),  # never an error for a NOTICE
        ("NOTICE", []),
        ("JOIN", ["461"]),
        ("JOIN nohash", ["403"]),
        ("PART #elsewhere", ["442"]),
        ("PART", ["461"]),
        ("TOPIC #elsewhere :x", ["442"]),
        ("TOPIC #nowhere", ["403"]),
        ("WHOIS nobody", ["401", "318"]),
        ("WHOIS", ["431"]),
        ("NICK", ["431"]),
        ("NICK 1bad", ["432"]),
        ("NICK taken", ["433"]),
        ("FROB x y", ["421"]),
        ("MODE", ["461"]),
        ("MODE #a", ["324"]),
        ("MODE #a +n", ["482"]),  # a mode change needs a channel operator
        ("MODE #a b", ["368"]),
        ("MODE #a +o taken", ["482"]),
        ("MODE ann", ["221"]),
        ("MODE ann +i", []),
        ("MODE ann -i", ["501"]),
        ("MODE ann +w", ["501"]),
        ("MODE taken", ["502"]),
        ("CAP FOO", ["410"]),
    ],
)
def test_errors_map_to_numerics(line: str, expected: list[str]) -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.irc_user(2, "taken")
    assert numerics(net.send(1, line)) == expected


def test_text_too_long_is_417_and_unknown_command_names_it() -> None:
    net = Net(max_text_chars=10)
    net.irc_user(1, "ann", "#a")
    assert numerics(net.send(1, "PRIVMSG #a :" + "x" * 11)) == ["417"]
    assert net.send(1, "frob") == [":srv 421 ann FROB :Unknown command"]


def test_too_many_rooms_is_405() -> None:
    net = Net(max_rooms_per_client=2)
    net.irc_user(1, "ann")
    assert numerics(net.send(1, "JOIN #a,#b,#c")) == ["353", "366", "353", "366", "405"]


def test_history_replay_marked_with_and_without_server_time() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.send(1, "PRIVMSG #a :earlier words", now=1700000000.0)
    net.irc_user(2, "bob", caps="server-time")
    got = net.send(2, "JOIN #a")
    assert "@time=2023-11-14T22:13:20.000Z :ann!ann@chatd PRIVMSG #a :earlier words" in got
    assert got[-1].startswith(":srv NOTICE #a :End of history: the 1 message above")
    net.irc_user(3, "cy")
    got = net.send(3, "JOIN #a")
    [replayed] = [line for line in got if "PRIVMSG" in line]
    assert re.fullmatch(
        r":ann!ann@chatd PRIVMSG #a :\[\d{4}-\d\d-\d\d \d\d:\d\d\] earlier words", replayed
    )
    net.irc_user(4, "dee")
    assert not any("NOTICE" in line for line in net.send(4, "JOIN #empty"))


def test_own_history_is_replayed_even_without_echo_message() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.send(1, "PRIVMSG #a :mine")
    net.send(1, "PART #a")
    got = net.send(1, "JOIN #a")
    assert any(line.endswith("] mine") for line in got)


def test_mixed_protocols_share_bytes_only_when_keys_match() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.irc_user(2, "bob", "#a")
    net.irc_user(3, "cy", "#a", caps="server-time")
    net.connect(4, JsonCodec())
    net.send(4, '{"op":"hello","nick":"jay"}')
    net.send(4, '{"op":"join","room":"#a"}')
    net.send(4, '{"op":"say","room":"#a","text":"hi all"}')
    assert net.out[1][-1] == net.out[2][-1] == ":jay!jay@chatd PRIVMSG #a :hi all"
    assert net.out[3][-1].startswith("@time=")
    assert '"text":"hi all"' in net.out[4][-1]


def test_codec_answers_for_events_it_renders_itself() -> None:
    codec = IrcCodec("srv")
    codec.observe(Welcome("ann", "srv"))
    codec.observe(Joined("#a", "", ("ann",)))
    assert (
        codec.encode(Error(ErrorCode.TIMEOUT, "too slow")) == b"ERROR :Closing link: too slow\r\n"
    )
    assert codec.encode(Error("weird_code", "odd")) == b":srv NOTICE ann :weird_code: odd\r\n"
    line = codec.encode(PrivateMessage("bob", "ann", "x", 0.0, notice=True))
    assert line == b":bob!bob@chatd NOTICE ann :x\r\n"
    assert codec.decode(b"TAGMSG #a") == []
    assert codec.decode(b"NAMES") == [Echo(IrcLines((":srv 366 ann * :End of /NAMES list",)))]
    assert [type(c) for c in codec.decode(b"PART #a,#b :bye")] == [Part, Part]
    assert [type(c) for c in codec.decode(b"JOIN #a,#b")] == [Join]  # #a already joined
    assert [type(c) for c in codec.decode(b"PRIVMSG #a,bob,#c :x")] == [Say, PrivMsg, Say]
    assert [type(c) for c in codec.decode(b"TOPIC #a")] == [Topic]
    assert [type(c) for c in codec.decode(b"WHO #a")] == [Who]
    assert [type(c) for c in codec.decode(b"WHO bob")] == [Whois]
    assert [type(c) for c in codec.decode(b"QUIT")] == [Echo, Quit]


def _cost(commands: list[Command]) -> int:
    return sum(map(command_cost, commands))


def test_multi_target_lines_cost_one_token_per_distinct_target() -> None:
    net = Net()
    net.irc_user(1, "ann")
    net.irc_user(2, "bob")
    codec = net.codecs[1]
    joins = codec.decode(b"JOIN #a,#A,#b,#a")  # type: ignore[attr-defined]
    assert [c.room for c in joins] == ["#a", "#b"] and _cost(joins) == 2
    names = codec.decode(b"NAMES #x,#y,#X")  # type: ignore[attr-defined]
    assert [c.room for c in names] == ["#x", "#y"] and _cost(names) == 2
    says = codec.decode(b"PRIVMSG bob,BOB,#a :hi")  # type: ignore[attr-defined]
    assert [getattr(c, "to", None) or c.room for c in says] == ["bob", "#a"]
    assert _cost(says) == 2
    net.send(1, "JOIN #a,#b,#c")
    parts = codec.decode(b"JOIN 0")  # type: ignore[attr-defined]
    assert sorted(c.room for c in parts) == ["#a", "#b", "#c"] and _cost(parts) == 3
    assert _cost(codec.decode(b"PING :x")) == 0  # type: ignore[attr-defined]


def test_too_many_targets_is_407_and_nothing_is_done() -> None:
    net = Net()
    net.connect(1, IrcCodec("srv", max_rooms=3))
    welcome = net.send(1, "NICK ann") + net.send(1, "USER u 0 * :Ann")
    assert any("TARGMAX=JOIN:3,PART:3,PRIVMSG:4,NOTICE:4,NAMES:3,WHOIS:1" in x for x in welcome)
    assert net.send(1, "JOIN #a,#b,#c,#d") == [
        ":srv 407 ann #d :Too many targets: at most 3 for JOIN; nothing was done"
    ]
    assert net.hub.rooms_of(1) == []
    assert numerics(net.send(1, "JOIN #a,#b,#c,#A,#B")) == ["353", "366"] * 3  # repeats: once
    assert numerics(net.send(1, "NAMES #a,#b,#c,#d")) == ["407"]
    assert numerics(net.send(1, "PART #a,#b,#c,#d")) == ["407"]
    assert numerics(net.send(1, "PRIVMSG a,b,c,d,e :hi")) == ["407"]
    assert net.send(1, "NOTICE a,b,c,d,e :hi") == []  # never an automatic reply
    assert numerics(net.send(1, "WHOIS ann,ann")) == ["311", "319", "312", "317", "318"]
    assert numerics(net.send(1, "WHOIS ann,bob")) == ["407"]


def test_user_keeps_username_and_realname_for_who_and_whois() -> None:
    net = Net()
    net.connect(1)
    assert numerics(net.send(1, "USER ann 0 * :")) == ["461"]  # empty realname
    assert numerics(net.send(1, "USER ann 0 * :   ")) == ["461"]
    assert numerics(net.send(1, "USER  0 * :Ann")) == ["461"]  # too few: the empty one
    assert numerics(net.send(1, "USER '' 0 * :Ann")) == []  # quotes dropped: the nick
    net.send(1, "NICK ann")
    net.connect(2)
    net.send(2, "NICK bob")
    # Not UTF-8 (Latin-1 from an old client): read as CP1252. A username keeps ASCII.
    net.send(2, b"USER b\xf6b@x.y 0 * :B\xf6b \x02Bold\x02 Builder")
    net.send(1, "JOIN #a")
    net.send(2, "JOIN #a")
    assert net.send(1, "WHO #a") == [
        ":srv 352 ann #a ann chatd srv ann H :0 Ann",
        ":srv 352 ann #a bbx.y chatd srv bob H :0 B\u00f6b Bold Builder",
        ":srv 315 ann #a :End of /WHO list",
    ]
    assert net.send(2, "WHOIS ann")[0] == ":srv 311 bob ann ann chatd * :Ann"
    net.send(2, "AWAY :out")
    assert net.send(1, "WHO bob") == [
        ":srv 352 ann * bbx.y chatd srv bob G :0 B\u00f6b Bold Builder",
        ":srv 315 ann bob :End of WHO list".replace("WHO", "/WHO"),
    ]


def test_who_masks_star_and_operators() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.irc_user(2, "bob", "#a")
    net.irc_user(3, "bert")  # shares no room with ann: invisible to her masks
    net.irc_user(4, "b[x]")  # brackets are nick characters, not a character class
    net.send(4, "JOIN #a")

    def nicks(line: str) -> list[str]:
        return [x.split(" ")[7] for x in net.send(1, line) if " 352 " in x]

    assert nicks("WHO *") == ["ann", "bob", "b[x]"]
    assert nicks("WHO 0") == ["ann", "bob", "b[x]"]
    assert nicks("WHO") == ["ann", "bob", "b[x]"]
    assert nicks("WHO b*") == ["bob", "b[x]"]
    assert nicks("WHO B?B") == ["bob"]
    assert nicks("WHO b{X}") == ["b[x]"]  # rfc1459 case mapping
    assert nicks("WHO *!u@chatd") == ["ann", "bob", "b[x]"]
    assert nicks("WHO *!nobody@*") == []
    assert nicks("WHO bert") == ["bert"]  # an exact nick is found anywhere, as IRC does
    assert numerics(net.send(1, "WHO * o")) == ["315"]  # operators only: there are none
    assert nicks("WHO b* %cuhnfo") == ["bob", "b[x]"]  # WHOX fields ignored, not "o"
    assert net.send(1, "WHO *" + "*a" * 200)[-1].startswith(":srv 315 ann *")


def test_lusers_and_names_of_several_channels() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a", "#b")
    net.irc_user(2, "bob", "#a")
    net.connect(3)  # not registered yet
    assert net.send(1, "LUSERS") == [
        ":srv 251 ann :There are 0 users and 2 invisible on 1 servers",
        ":srv 252 ann 0 :operator(s) online",
        ":srv 253 ann 1 :unknown connection(s)",
        ":srv 254 ann 2 :channels formed",
        ":srv 255 ann :I have 3 clients and 0 servers",
        ":srv 265 ann 2 2 :Current local users 2, max 2",
        ":srv 266 ann 2 2 :Current global users 2, max 2",
    ]
    assert net.send(1, "NAMES #a,#b,#nowhere") == [
        ":srv 353 ann = #a :ann bob",
        ":srv 366 ann #a :End of /NAMES list",
        ":srv 353 ann = #b :ann",
        ":srv 366 ann #b :End of /NAMES list",
        ":srv 366 ann #nowhere :End of /NAMES list",
    ]


def test_a_notice_is_never_answered_automatically() -> None:
    net = Net()
    net.irc_user(1, "ann", "#a")
    net.irc_user(2, "bob")
    net.send(2, "AWAY :gone")
    assert net.send(1, "NOTICE bob :automated") == []  # no 301 for a NOTICE
    assert net.out[2][-1] == ":ann!ann@chatd NOTICE bob :automated"
    assert numerics(net.send(1, "PRIVMSG bob :hello")) == ["301"]  # a PRIVMSG gets one
    for line in ("NOTICE nobody :x", "NOTICE #elsewhere :x", "NOTICE #a", "NOTICE a,b,c,d,e :x"):
        assert net.send(1, line) == [], line
    # A NOTICE to a channel stays a NOTICE for IRC users (so their bots do not answer it)
    # and is a plain message for the others.
    net.irc_user(3, "cat", "#a")
    net.connect(4, JsonCodec())
    net.send(4, '{"op":"hello","nick":"jay"}')
    net.send(4, '{"op":"join","room":"#a"}')
    net.send(1, "NOTICE #a :build passed")
    assert net.out[3][-1] == ":ann!ann@chatd NOTICE #a :build passed"
    assert '"text":"build passed"' in net.out[4][-1] and "notice" not in net.out[4][-1]
