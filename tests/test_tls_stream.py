"""TlsStream alone: a client and a server stream back to back in memory (h11's
ConnectionPair idea), fed whole and byte by byte; broken and truncated input."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from chatd.certs import certificate_fingerprint, generate
from chatd.streams import TLS_RECORD_HANDSHAKE as HANDSHAKE_BYTE
from chatd.streams import StreamError
from chatd.tls import TlsStream, client_context, fingerprint, server_context

pytest.importorskip("cryptography")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("cert")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    generate(cert_file, key_file, ["chatd-test", "localhost", "127.0.0.1"])
    return cert_file, key_file


@pytest.fixture(scope="module")
def sctx(cert: tuple[Path, Path]) -> ssl.SSLContext:
    return server_context(str(cert[0]), str(cert[1]))


def pump(a: TlsStream, b: TlsStream, *, bytewise: bool = False) -> tuple[bytes, bytes]:
    """Move wire bytes both ways until quiet; returns (plaintext a got, plaintext b got)."""
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    for _ in range(100):
        moved = False
        for src, dst, got in ((a, b, got_b), (b, a, got_a)):
            wire = src.data_to_send()
            if wire:
                moved = True
                pieces = [wire[i : i + 1] for i in range(len(wire))] if bytewise else [wire]
                for piece in pieces:
                    got.append(dst.receive(piece))
        if not moved:
            return b"".join(got_a), b"".join(got_b)
    raise AssertionError("the streams never went quiet")


def pair(sctx: ssl.SSLContext) -> tuple[TlsStream, TlsStream]:
    return TlsStream(client_context(), server_side=False), TlsStream(sctx)


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-by-byte"])
def test_handshake_and_lines_both_ways(sctx: ssl.SSLContext, bytewise: bool) -> None:
    client, server = pair(sctx)
    assert not client.ready and not server.ready
    first = client.data_to_send()
    assert first[0] == HANDSHAKE_BYTE
    server.receive(first)
    pump(client, server, bytewise=bytewise)
    assert client.ready and server.ready
    assert server.version in ("TLSv1.2", "TLSv1.3")
    client.send(b"hello server\n")
    server.send(b"hello client\n" * 3)
    got_client, got_server = pump(client, server, bytewise=bytewise)
    assert got_server == b"hello server\n"
    assert got_client == b"hello client\n" * 3


def test_bytes_sent_before_the_handshake_are_held_and_counted(sctx: ssl.SSLContext) -> None:
    client, server = pair(sctx)
    banner = b"*** chatd. Type a nick.\n"
    server.send(banner)
    server.send(b"second\n")
    assert server.buffered_bytes == len(banner) + len(b"second\n")
    assert server.data_to_send() == b""  # nothing in clear before the handshake
    got_client, _ = pump(client, server)
    assert server.ready and server.buffered_bytes == 0
    assert got_client == banner + b"second\n"


def test_large_payload_spans_records(sctx: ssl.SSLContext) -> None:
    client, server = pair(sctx)
    pump(client, server)
    blob = b"".join(b"line %d " % i + b"x" * 200 + b"\n" for i in range(1000))
    server.send(blob)
    got_client, _ = pump(client, server)
    assert got_client == blob


def test_close_notify_finishes_the_peer(sctx: ssl.SSLContext) -> None:
    client, server = pair(sctx)
    pump(client, server)
    server.send(b"bye\n")
    server.close()
    server.close()  # idempotent
    got_client, _ = pump(client, server)
    assert got_client == b"bye\n"
    assert client.finished
    server.send(b"after close\n")  # ignored, not an error
    assert server.data_to_send() == b""


def test_plain_end_of_stream_finishes(sctx: ssl.SSLContext) -> None:
    client, server = pair(sctx)
    pump(client, server)
    assert server.receive(b"") == b""
    assert server.finished


def test_end_of_stream_mid_handshake_finishes(sctx: ssl.SSLContext) -> None:
    client, server = pair(sctx)
    hello = client.data_to_send()
    server.receive(hello[:10])  # a truncated ClientHello
    assert not server.ready and not server.finished
    assert server.receive(b"") == b""
    assert server.finished and not server.ready


def test_truncated_handshake_waits_without_answering(sctx: ssl.SSLContext) -> None:
    client, server = pair(sctx)
    hello = client.data_to_send()
    for i in range(len(hello) - 1):
        assert server.receive(hello[i : i + 1]) == b""
    assert server.data_to_send() == b""  # no reply until the whole ClientHello is in
    server.receive(hello[-1:])
    assert server.data_to_send()[:1] == bytes([HANDSHAKE_BYTE])


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x00\x05hello",  # a handshake record holding no ClientHello
        b"\x16GET / HTTP/1.1\r\n\r\n",  # 0x16 then text
        b"\x16\x03\x01\xff\xff" + b"\x00" * 64,  # an oversized record length
        b"\x16\x00\x00\x00\x00\x00\x00",  # nonsense version
    ],
)
def test_garbage_after_0x16_is_a_stream_error(sctx: ssl.SSLContext, garbage: bytes) -> None:
    server = TlsStream(sctx)
    with pytest.raises(StreamError) as info:
        for i in range(len(garbage)):  # byte by byte: it must fail, never hang or crash
            server.receive(garbage[i : i + 1])
        server.receive(b"\x00" * 20000)  # whatever is still wanted: more garbage
    assert "TLS" in info.value.reason
    assert server.finished
    assert server.receive(b"more") == b""  # a failed stream stays quiet


def test_bad_record_after_the_handshake_is_a_stream_error(sctx: ssl.SSLContext) -> None:
    client, server = pair(sctx)
    pump(client, server)
    client.send(b"secret\n")
    record = bytearray(client.data_to_send())
    record[-1] ^= 0xFF  # break the authentication tag
    with pytest.raises(StreamError, match="bad TLS record"):
        server.receive(bytes(record))
    assert server.finished


def test_fingerprint_form_matches_the_certificate_file(cert: tuple[Path, Path]) -> None:
    fp = certificate_fingerprint(cert[0])
    assert fp.startswith("SHA256:") and len(fp) == 7 + 43 and "=" not in fp
    der = ssl.PEM_cert_to_DER_cert(cert[0].read_text())
    assert fingerprint(der) == fp


def test_the_client_sees_the_server_fingerprint(
    sctx: ssl.SSLContext, cert: tuple[Path, Path]
) -> None:
    client, server = pair(sctx)
    pump(client, server)
    der = client.peer_certificate()
    assert der is not None and fingerprint(der) == certificate_fingerprint(cert[0])


def test_generated_key_is_private(cert: tuple[Path, Path]) -> None:
    for path in cert:
        assert path.stat().st_mode & 0o777 == 0o600


def test_a_tls12_only_client_is_served(sctx: ssl.SSLContext) -> None:
    old = client_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    client, server = TlsStream(old, server_side=False), TlsStream(sctx)
    pump(client, server)
    assert server.version == "TLSv1.2"
    client.send(b"hi\n")
    assert pump(client, server)[1] == b"hi\n"


def test_tls11_client_is_refused(sctx: ssl.SSLContext) -> None:
    server = TlsStream(sctx)
    # A ClientHello record that offers TLS 1.1 at most (legacy_version 0x0302, no
    # supported_versions extension), one AES-CBC suite.
    body = b"\x03\x02" + b"\x00" * 32 + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    record = b"\x16\x03\x01" + len(hello).to_bytes(2, "big") + hello
    with pytest.raises(StreamError, match="TLS handshake failed"):
        server.receive(record)
    assert server.data_to_send()[:1] == b"\x15"  # an alert goes back to say why
