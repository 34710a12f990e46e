"""The certificates one side of the broker uses, checked before use.

A side's directory (`vtax certs init` writes DIR/controller and DIR/agent) holds the CA that signed the broker's
TLS certificate, this side's key and certificate, and on an agent the controllers' certificates whose
signatures it accepts. Celery's `auth` serializer takes these as paths and fails late and cryptically on a
wrong one; here each is checked at start (present, this side's, the key matching, not expired) and a problem is
one ValueError that names the file and what to do.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.settings import CA_FILE, CERT_FILE, KEY_FILE, TRUSTED_DIR

Side = Literal["controller", "agent"]
ROTATE = "see docs/how-to/secure-deployment.md#rotating-certificates"


@dataclass(frozen=True)
class SideFiles:
    """What one side signs, verifies and connects with."""

    ca: Path  # verifies the broker's TLS certificate
    cert: Path  # this side's certificate: the TLS client certificate; on the controller, the task signer
    key: Path
    store: Path  # the certificates whose signatures are accepted (the controller verifies nothing: its own)


def read_certificate(path: Path) -> x509.Certificate:
    """A PEM certificate, or ValueError naming the file."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable PEM certificate: {exc}") from None


def expires_in_days(cert: x509.Certificate, now: datetime.datetime | None = None) -> float:
    now = now or datetime.datetime.now(datetime.UTC)
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def side_files(directory: Path, side: Side) -> SideFiles:
    """The checked files of `directory` for `side`; ValueError says which is missing, expired or another
    side's."""
    other = "agent" if side == "controller" else "controller"
    if not directory.is_dir():
        raise ValueError(
            f"{directory}: no such directory; expected the {side}'s (`vtax certs init DIR` makes DIR/{side})"
        )
    trusted = directory / TRUSTED_DIR
    if side == "controller" and trusted.exists():
        raise ValueError(
            f"{directory}: this is an agent's directory (it has {TRUSTED_DIR}/); give the controller DIR/controller"
        )
    if side == "agent" and not trusted.is_dir():
        raise ValueError(
            f"{directory}: no {TRUSTED_DIR}/ of controller certificates; is it the {other}'s? give the agent DIR/agent"
        )
    files = SideFiles(
        ca=directory / CA_FILE,
        cert=directory / CERT_FILE,
        key=directory / KEY_FILE,
        store=trusted if side == "agent" else directory / CERT_FILE,
    )
    for path in (files.ca, files.cert, files.key):
        if not path.is_file():
            raise ValueError(f"{path}: missing; `vtax certs init DIR` writes it into DIR/{side}")
    cert = read_certificate(files.cert)
    _not_expired(files.cert, cert)
    _not_expired(files.ca, read_certificate(files.ca))
    try:
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{files.key}: not a readable unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{files.key}: an RSA key is needed (Celery signs with RSA only)")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError(f"{files.key}: does not belong to {files.cert}")
    if side == "agent":
        certs = sorted(trusted.glob("*.crt"))
        if not certs:
            raise ValueError(f"{trusted}: holds no controller certificate (*.crt); this agent would accept no task")
        for path in certs:
            _not_expired(path, read_certificate(path))
    return files


def _not_expired(path: Path, cert: x509.Certificate) -> None:
    if expires_in_days(cert) <= 0:
        raise ValueError(f"{path}: expired on {cert.not_valid_after_utc:%Y-%m-%d}; {ROTATE}")
