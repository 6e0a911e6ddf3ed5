"""Look-alike names, invisible and bidi text, message cost: chatd.names, the hub and the
token bucket, pure (issue 10, findings 4 and 6). The same rules against a real server
are in tests/test_abuse_text.py."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.config import Config
from chatd.hub import Hub
from chatd.model import Deliver, Error, Hello, Join, Joined, Nick, PrivMsg, Say, Store, Topic
from chatd.names import (
    blank,
    clean_line,
    clean_text,
    fold,
    invisible,
    mixed_scripts,
    nick_skeleton,
    room_problem,
    valid_room,
)
from chatd.ratelimit import TokenBucket, command_cost

NOW = 1000.0
BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
# The cases of the issue, each a look-alike of #lobby.
LOOK_ALIKES = {
    "nbsp": "#lob\u00a0by",
    "hair space": "#lob\u200aby",
    "hangul filler": "#lob\u3164by",
    "choseong filler": "#lobby\u115f",
    "jungseong filler": "#lobby\u1160",
    "halfwidth filler": "#lobby\uffa0",
    "mongolian vowel separator": "#lobby\u180e",
    "variation selector": "#lobby\ufe0f",
    "zero width space": "#lob\u200bby",
    "word joiner": "#lob\u2060by",
    "braille blank": "#lobby\u2800",
    "ideographic space": "#lob\u3000by",
    "line separator": "#lob\u2028by",
    "rtl override": "#\u202eybbol",
    "cyrillic o": "#l\u043ebby",
    "greek omicron": "#l\u03bfbby",
    "cyrillic a in latin": "#c\u0430fe",
    "tag characters": "#lobby\U000e0041",
}


def make_hub(**overrides: object) -> Hub:
    return Hub(Config(server_name="test", history_replay=0, **overrides))  # type: ignore[arg-type]


def register(hub: Hub, cid: int, nick: str) -> list[object]:
    hub.connect(cid, NOW)
    return list(hub.handle(cid, Hello(nick), NOW))


def errors(actions: Sequence[object]) -> list[str]:
    return [a.event.code for a in actions if isinstance(a, Deliver) and isinstance(a.event, Error)]


# ---------------------------------------------------------------- room names


@pytest.mark.parametrize("name", sorted(LOOK_ALIKES))
def test_look_alike_rooms_are_refused(name: str) -> None:
    room = LOOK_ALIKES[name]
    assert not valid_room(room), room
    hub = make_hub()
    register(hub, 1, "alice")
    assert errors(hub.handle(1, Join(room), NOW)) == ["bad_room"]


@pytest.mark.parametrize(
    "spelling, room",
    [
        ("#\uff4c\uff4f\uff42\uff42\uff59", "#lobby"),  # fullwidth letters
        ("\uff03lobby", "#lobby"),  # fullwidth number sign
        ("#LOBBY", "#lobby"),
        ("#cafe\u0301", "#caf\u00e9"),  # NFD accent
        ("#\ufb01sh", "#fish"),  # the fi ligature
    ],
)
def test_other_spellings_of_a_room_are_the_room(spelling: str, room: str) -> None:
    hub = make_hub()
    register(hub, 1, "alice")
    register(hub, 2, "bob")
    first = hub.handle(1, Join(room), NOW)[0]
    assert isinstance(first, Deliver) and isinstance(first.event, Joined)
    second = hub.handle(2, Join(spelling), NOW)[0]
    assert isinstance(second, Deliver) and second.event == Joined(
        first.event.room, "", ("alice", "bob")
    )
    assert fold(spelling) == fold(room)


def test_a_room_created_by_another_spelling_gets_the_nfkc_name() -> None:
    hub = make_hub()
    register(hub, 1, "alice")
    joined = hub.handle(1, Join("#cafe\u0301"), NOW)[0]
    assert isinstance(joined, Deliver) and isinstance(joined.event, Joined)
    assert joined.event.room == "#caf\u00e9"


@pytest.mark.parametrize(
    "room",
    ["#lobby", "#caf\u00e9", "#\u043b\u043e\u0431\u0431\u0438", "#\u03b1\u03b2\u03b3",
     "#\u65e5\u672c\u8a9e\u30c1\u30e3\u30c3\u30c8", "#\ud55c\uad6d\uc5b4", "#\u4e2d\u6587chat",
     "#x-1.2_3", "#\U0001f600", "#Hawai\u02bbi", "#\u0939\u093f\u0928\u094d\u0926\u0940",
     "#\u3072\u3089\u304c\u306a\u30fc\u6f22\u5b57\u3005"],
)  # fmt: skip
def test_honest_rooms_in_any_one_script_are_fine(room: str) -> None:
    assert room_problem(room) is None


def test_refusals_say_why() -> None:
    assert "invisible" in (room_problem("#lob\u3164by") or "")
    assert "cyrillic, latin" in (room_problem("#l\u043ebby") or "")
    assert "NFKC" in (room_problem("#\uff4cobby") or "")


_INVISIBLE_CATEGORIES = {"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"}
_KNOWN_IGNORABLE = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u180e", "\u034f", "\u00ad"}


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40).map(lambda s: "#" + s))
def test_any_room_name_is_refused_or_nfkc_stable_and_visible(room: str) -> None:
    if valid_room(room):
        assert unicodedata.normalize("NFKC", room) == room
        for ch in room:
            assert unicodedata.category(ch) not in _INVISIBLE_CATEGORIES, room
            assert ch not in _KNOWN_IGNORABLE and not 0xFE00 <= ord(ch) <= 0xFE0F, room
        assert mixed_scripts(room) is None and not any(invisible(ch) for ch in room)


# A pool whose scripts are known independently of chatd.names (by code point range).
_LATIN = "abcelopxyz\u00e9\u00df"
_CYRILLIC = "\u0430\u043e\u0435\u0440\u0441\u0436"
_GREEK = "\u03b1\u03bf\u03b5\u03c1\u03bd"
_COMMON = "0123456789-_."
_TRICKY = "\uff4c\uff4f\u0301\u00a0\u200a\u3000\u200b\u3164\u115f\u1160\uffa0\u180e\ufe0f\u2066"


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=_LATIN + _CYRILLIC + _GREEK + _COMMON + _TRICKY, min_size=1, max_size=12))
def test_room_names_mixing_latin_cyrillic_greek_are_refused(body: str) -> None:
    room = "#" + body
    scripts = {
        name
        for name, pool in (("latin", _LATIN), ("cyrillic", _CYRILLIC), ("greek", _GREEK))
        if any(ch in pool for ch in body)
    }
    stable = unicodedata.normalize("NFKC", room) == room
    visible = not any(
        ch in "\u00a0\u200a\u3000\u200b\u3164\u115f\u1160\uffa0\u180e\ufe0f\u2066" for ch in body
    )
    assert valid_room(room) == (stable and visible and len(scripts) <= 1), (room, scripts)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_the_hub_joins_the_nfkc_name_or_refuses(body: str) -> None:
    hub = make_hub()
    register(hub, 1, "alice")
    first = hub.handle(1, Join("#" + body), NOW)[0]
    assert isinstance(first, Deliver)
    if isinstance(first.event, Joined):
        assert first.event.room == unicodedata.normalize("NFKC", "#" + body)
        assert valid_room(first.event.room)
    else:
        assert isinstance(first.event, Error) and first.event.code == "bad_room", first


# ---------------------------------------------------------------- nicks


@pytest.mark.parametrize(
    "nick, twin",
    [("alice", "aIice"), ("alice", "Alice"), ("ALICE", "ALlCE"), ("bob", "b0b"), ("will", "wi11"),
     ("modem", "rnodem"), ("wendy", "vvendy"), ("Ole", "O1e")],
)  # fmt: skip
def test_a_nick_that_looks_like_one_in_use_is_taken(nick: str, twin: str) -> None:
    assert nick_skeleton(nick) == nick_skeleton(twin)
    hub = make_hub()
    register(hub, 1, nick)
    assert errors(register(hub, 2, twin)) == ["nick_taken"]
    assert errors(hub.handle(1, Nick(twin), NOW)) == []  # your own look-alike is yours
    register(hub, 3, "carol")
    assert errors(hub.handle(3, Nick(nick), NOW)) == ["nick_taken"]


def test_a_look_alike_nick_is_free_once_its_twin_left() -> None:
    hub = make_hub()
    register(hub, 1, "alice")
    hub.handle(1, Nick("alice2"), NOW)
    assert errors(register(hub, 2, "aIice")) == []


def test_different_nicks_stay_different() -> None:
    assert len({nick_skeleton(n) for n in ("alice", "alicia", "bob", "bobby", "u1", "u2")}) == 6


# ---------------------------------------------------------------- text


@pytest.mark.parametrize(
    "text",
    ["\u200b", "\u200b\u200c\u200d\u2060\ufeff", " \u3164 ", "\u115f\u1160", "\u2800\n\u00ad"],
)
def test_invisible_only_messages_are_refused(text: str) -> None:
    assert blank(text)
    hub = make_hub()
    register(hub, 1, "alice")
    hub.handle(1, Join("#a"), NOW)
    assert errors(hub.handle(1, Say("#a", text), NOW)) == ["bad_request"]
    register(hub, 2, "bob")
    assert errors(hub.handle(1, PrivMsg("bob", text), NOW)) == ["bad_request"]


def test_text_with_anything_visible_is_not_blank() -> None:
    assert not blank("\u200ba") and not blank("\U0001f468\u200d\U0001f469") and not blank(".")


@given(st.text(max_size=200))
def test_cleaned_text_has_no_bidi_or_control_characters(text: str) -> None:
    for cleaned, allowed in ((clean_text(text), "\t\n"), (clean_line(text), "")):
        assert not any(ch in BIDI for ch in cleaned)
        assert not any(
            (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0) and ch not in allowed for ch in cleaned
        )


def test_bidi_controls_are_replaced_for_every_recipient() -> None:
    hub = make_hub()
    register(hub, 1, "alice")
    hub.handle(1, Join("#a"), NOW)
    said = hub.handle(1, Say("#a", "x\u202egnp.exe\u2066y\u2069"), NOW)
    assert isinstance(said[0], Store) and said[0].message.text == "x\ufffdgnp.exe\ufffdy\ufffd"
    topic = hub.handle(1, Topic("#a", "\u202eevil"), NOW)[0]
    assert isinstance(topic, Deliver) and "\u202e" not in topic.event.topic  # type: ignore[attr-defined]


def test_unicode_line_separators_count_as_lines() -> None:
    assert clean_text("a\u2028b\u2029c") == "a\nb\nc"
    assert clean_line("a\u2028b") == "a b"


# ---------------------------------------------------------------- many lines


def test_max_message_lines_refuses_longer_messages() -> None:
    hub = make_hub(max_message_lines=40)
    register(hub, 1, "alice")
    hub.handle(1, Join("#a"), NOW)
    assert errors(hub.handle(1, Say("#a", "\n".join(["x"] * 40)), NOW)) == []
    assert errors(hub.handle(1, Say("#a", "\n".join(["x"] * 41)), NOW)) == ["too_many_lines"]
    assert errors(hub.handle(1, Say("#a", "x\n" * 1000), NOW)) == ["too_many_lines"]
    register(hub, 2, "bob")
    assert errors(hub.handle(1, PrivMsg("bob", "x\n" * 1000), NOW)) == ["too_many_lines"]


def test_newlines_at_the_ends_of_a_message_are_not_lines() -> None:
    hub = make_hub(max_message_lines=3)
    register(hub, 1, "alice")
    hub.handle(1, Join("#a"), NOW)
    said = hub.handle(1, Say("#a", "\n\na\nb\nc\n\n\n"), NOW)
    assert isinstance(said[0], Store) and said[0].message.text == "a\nb\nc"


def test_default_max_message_lines_is_no_more_generous_than_ergo() -> None:
    assert 1 <= Config().max_message_lines <= 100


@pytest.mark.parametrize(
    "text, cost",
    [("hi", 1), ("a\nb\nc\nd", 1), ("a\nb\nc\nd\ne", 2), ("\n".join(["x"] * 40), 10),
     ("x" * 1024, 1), ("x" * 1025, 2), ("\u00e9" * 1000, 2), ("x\n" * 1000, 251)],
)  # fmt: skip
def test_a_message_costs_tokens_by_its_lines_and_bytes(text: str, cost: int) -> None:
    assert command_cost(Say("#a", text)) == cost
    assert command_cost(PrivMsg("bob", text)) == cost
    assert command_cost(Join("#a")) == 1


def test_the_bucket_goes_into_debt_and_the_sender_waits_longer() -> None:
    bucket = TokenBucket(rate=10.0, burst=30, now=0.0)
    assert bucket.take(0.0)
    bucket.charge(command_cost(Say("#a", "\n".join(["x"] * 40))) - 1)
    assert bucket.take(0.0)  # 20 left
    bucket.charge(39)  # a 160-line paste, were it allowed: into debt
    assert not bucket.take(0.0)
    assert bucket.delay(0.0) == pytest.approx(2.1)  # from -20 back to 1 at 10/s
    assert bucket.take(2.1)
