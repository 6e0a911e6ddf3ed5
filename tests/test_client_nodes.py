"""``chat host1,host2``: the client starts on the first node that answers."""

from __future__ import annotations

from cluster_helpers import free_port
from helpers import ChatdProcess
from prompt_toolkit.input import PipeInput
from test_client_app import Screen, run

from client import app


def test_the_client_starts_on_the_next_node_when_the_first_is_down() -> None:
    server = ChatdProcess()
    try:
        down = free_port()  # nothing listens there
        opts = app.Options(
            "127.0.0.1", down, "walt", "#lobby", None, others=(("127.0.0.1", server.port),)
        )
        screen = Screen()

        async def script(pipe: PipeInput) -> None:
            await screen.wait_for("you joined #lobby")
            pipe.send_text("/quit\r")

        assert run(screen.run(opts, script)) == 0
        assert f"127.0.0.1:{server.port}" in screen.text
    finally:
        server.stop()
