"""Config: values from TOML and flags are checked against the field annotations."""

from __future__ import annotations

import pytest

from chatd.config import Config, ConfigError


@pytest.mark.parametrize(
    "values, message",
    [
        ({"max_clients": True}, "max_clients must be a int"),  # bool is not a number here
        ({"max_clients": None}, "max_clients must be a int"),  # only optional fields take None
        ({"irc_port": "6667"}, "irc_port must be a int or nothing"),
        ({"rate_limit": "fast"}, "rate_limit must be a float"),
        ({"no_such_setting": 1}, "unknown setting(s): no_such_setting"),
        ({"max_line_bytes": 0}, "max_line_bytes must be at least 1"),
        ({"irc_port": 70000}, "irc_port must be 0..65535"),
        (
            {"out_soft_limit_bytes": 10, "out_hard_limit_bytes": 5},
            "out_soft_limit_bytes must not exceed out_hard_limit_bytes",
        ),
    ],
)
def test_bad_values_are_refused_with_their_name(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config.from_mapping(values)


def test_good_values_are_applied() -> None:
    config = Config.from_mapping(
        {"rate_limit": 5, "irc_port": None, "server_name": "lab"}, Config(irc_port=6667)
    )
    assert config.rate_limit == 5.0 and isinstance(config.rate_limit, float)
    assert config.irc_port is None and config.server_name == "lab"
