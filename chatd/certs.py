"""The server's TLS certificate: a given one, or a self-signed one made on first start.

A LAN has no certificate authority, so chatd does what ssh does: it makes its own key the
first time it runs (ECDSA P-256, valid for 20 years, names of this machine in the
subject alternative names), keeps it next to the history database with mode 0600, and
prints its fingerprint so people can compare it with what their client shows
(docs/tls.md). Generating needs the ``cryptography`` library (the ``tls`` extra); it is
imported only here, only when a certificate must be made. Using an existing certificate
needs the standard library alone.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from chatd.config import Config
from chatd.tls import fingerprint, server_context

__all__ = ["TlsSetup", "TlsUnavailable", "certificate_fingerprint", "generate", "setup_tls"]

logger = logging.getLogger(__name__)

CERT_NAME = "tls-cert.pem"
KEY_NAME = "tls-key.pem"
VALIDITY_DAYS = 20 * 365


class TlsUnavailable(Exception):
    """TLS cannot be turned on; ``str()`` says why, in one sentence."""


@dataclass(frozen=True, slots=True)
class TlsSetup:
    context: ssl.SSLContext
    fingerprint: str
    cert_file: Path
    generated: bool  # made just now


def certificate_fingerprint(cert_file: Path) -> str:
    """The fingerprint of the first certificate in a PEM file (standard library only)."""
    pem = cert_file.read_text(encoding="ascii")
    end = pem.index(ssl.PEM_FOOTER) + len(ssl.PEM_FOOTER)
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem[pem.index(ssl.PEM_HEADER) : end]))


def setup_tls(config: Config, directory: Path) -> TlsSetup | None:
    """The TLS context ``config`` asks for, or None when TLS is off.

    ``directory`` is where a generated certificate lives (next to the history database).

    Raises:
        TlsUnavailable: TLS is wanted (``tls = "on"``, or a certificate was given) but
            cannot be had; or, with ``tls = "auto"``, to say why it stays off (the caller
            logs it and carries on in plain text).
    """
    if config.tls == "off":
        return None
    generated = False
    if config.tls_cert:
        cert_file = Path(config.tls_cert)
        key_file = Path(config.tls_key or config.tls_cert)
    else:
        cert_file, key_file = directory / CERT_NAME, directory / KEY_NAME
        if not (cert_file.exists() and key_file.exists()):
            try:
                generate(cert_file, key_file, _names(config))
            except ImportError:
                raise TlsUnavailable(
                    "the 'cryptography' library is not installed, so no certificate can be "
                    "made (pip install 'chatd[tls]', or give --tls-cert and --tls-key)"
                ) from None
            except OSError as exc:
                raise TlsUnavailable(
                    f"cannot write the certificate in {directory}: {exc.strerror or exc}"
                ) from None
            generated = True
    try:
        context = server_context(str(cert_file), str(key_file))
        fp = certificate_fingerprint(cert_file)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise TlsUnavailable(
            f"cannot use the certificate {cert_file} with key {key_file}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from None
    return TlsSetup(context, fp, cert_file, generated)


def _names(config: Config) -> list[str]:
    names = [config.server_name, socket.gethostname(), "localhost", "127.0.0.1", "::1"]
    if config.host not in ("", "0.0.0.0", "::"):
        names.append(config.host)
    return list(dict.fromkeys(name for name in names if name))


def generate(cert_file: Path, key_file: Path, names: list[str]) -> None:
    """Write a new self-signed ECDSA P-256 certificate and its key (mode 0600).

    Raises:
        ImportError: ``cryptography`` is not installed.
        OSError: the files cannot be written.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64] or "chatd")])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            try:
                alt.append(x509.DNSName(name))
            except ValueError:  # not a name a certificate can carry (e.g. non-ASCII)
                continue
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The key first, created 0600 from the start (never world-readable, not even briefly);
    # the certificate last, so a half-written pair is regenerated on the next start.
    _write_private(key_file, key_pem)
    _write_private(cert_file, cert_pem)
    logger.info("made a new TLS certificate %s (key %s)", cert_file, key_file)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
