"""chatd: a LAN chat server on one non-blocking ``selectors`` loop.

Layers, bottom to top (each module's docstring says what it owns):

- transport: :mod:`chatd.server` (loop), :mod:`chatd.connection`, :mod:`chatd.buffers`,
  :mod:`chatd.framing`
- codecs: :mod:`chatd.codecs` (text for ``nc``, JSON for the client, IRC)
- core: :mod:`chatd.hub` over the value types of :mod:`chatd.model` (pure, sans-I/O)
"""

__version__ = "0.1.0"
