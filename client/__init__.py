"""chat: the terminal client for chatd (docs/client.md).

Layers, bottom to top: :mod:`client.core` (pure: input -> requests, frames -> lines),
:mod:`client.net` (asyncio streams), :mod:`client.ui` (prompt_toolkit),
:mod:`client.app` (wiring), :mod:`client.__main__` (command line).
"""
