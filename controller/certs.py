"""`vtax certs`: the key material of a secure deployment, made in one step and checked for expiry.

`init` writes a CA, the broker's TLS certificate, the controller's key and certificate (its TLS client
certificate, and the one that signs every task), an agent key and certificate with the controller's certificate
as the one it trusts, a Redis ACL file with a user and fresh password per side, and each side's environment
file. Expiries: the CA 10 years, the others 397 days (the longest a public TLS certificate may live, so rotation
is a yearly habit). `check` lists what expires when and exits 1 when something has expired or soon will.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
from pathlib import Path
from typing import TypedDict

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.broker import Keys
from agent.settings import CA_FILE, CERT_FILE, KEY_FILE, TRUSTED_DIR, BrokerConfig
from agent.trust import expires_in_days, read_certificate
from controller.errors import InputError

CA_DAYS = 3650
LEAF_DAYS = 397
WARN_DAYS = 30
KEY_BITS = (
    2048  # RSA (Celery signs with RSA only). 2048 bits: NIST's until 2030; signing takes 0.38 ms, 3072 bits 1.0 ms
)
# here, which a trial of 1,000 agents pays per task on the controller
USERS = {"controller": "vtax-controller", "agent": "vtax-agent"}


class CertStatus(TypedDict):
    """One certificate as `vtax certs check` reports it."""

    path: str
    subject: str
    issuer: str
    not_after: str  # ISO 8601, UTC
    days_left: float
    status: str  # ok, expires_soon, expired, untrusted (not signed by the directory's CA)


def acl_rules(prefix: str = "") -> dict[str, str]:
    """Each side's Redis ACL rules, without the user's password (tests/test_security.py runs on exactly these).

    Both sides reach only the installation's keys and no pub/sub channel; the commands are the categories
    Celery's Redis transport uses (lists, sets, sorted sets, hashes, strings, transactions, its Lua scripts),
    without anything Redis marks dangerous (FLUSHALL, KEYS, CONFIG, DEBUG, CLIENT KILL, …). An agent may also
    only read the controller's cancel flags, never set them.
    """
    keys = Keys(prefix)
    commands = (
        "resetchannels -@all +@read +@write +@transaction +@connection +eval +evalsha +script|load +time -@dangerous"
    )
    return {
        "controller": f"resetkeys ~{keys.prefix}* {commands}",
        "agent": f"resetkeys %R~{keys.cancel('*')} ~{keys.prefix}vtax.* ~{keys.prefix}vtax:agent:* "
        f"~{keys.replies('*')} ~{keys.prefix}_kombu.* ~{keys.prefix}unacked* {commands}",
    }


def init(directory: Path, *, hosts: list[str], broker_url: str, port: int, prefix: str = "") -> dict[str, Path]:
    """Write the material of one deployment into `directory` (which must be empty or missing); returns the
    main files. InputError when the directory holds anything."""
    _new_directory(directory)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = _name("vtax CA")
    ca = _build(ca_name, ca_name, ca_key.public_key(), ca_key, now, CA_DAYS, ca=True)
    _write_key(directory / "ca" / "ca.key", ca_key)
    _write(directory / "ca" / CA_FILE, _pem(ca), 0o644)
    for side in ("redis", "controller", "agent"):
        _write(directory / side / CA_FILE, _pem(ca), 0o644)
    passwords = {side: secrets.token_urlsafe(24) for side in USERS}
    rules = acl_rules(prefix)
    _write(
        directory / "redis" / "users.acl",
        "user default off\n"
        + "".join(
            f"user {USERS[side]} on #{hashlib.sha256(passwords[side].encode()).hexdigest()} {rules[side]}\n"
            for side in USERS
        ),
        0o600,
    )
    for side in USERS:
        env = (
            f"# {side}: the broker user and its password; mode 600, read by the {side}'s service or shell\n"
            f"VTAX_BROKER={broker_url}\nVTAX_BROKER_USERNAME={USERS[side]}\nVTAX_BROKER_PASSWORD={passwords[side]}\n"
            f"VTAX_BROKER_CERTS={(directory / side).absolute()}\n"
            + (f"VTAX_BROKER_PREFIX={prefix}\n" if prefix else "")
        )
        _write(directory / side / "broker.env", env, 0o600)
    _issue(directory, ca_key, ca, hosts=hosts, now=now, trusted="controller.crt")
    _write_redis_conf(directory, port)
    return {
        "ca key (keep it offline)": directory / "ca" / "ca.key",
        "redis configuration": directory / "redis" / "redis-tls.conf",
        "controller": directory / "controller",
        "agents": directory / "agent",
    }


def renew(old: Path, new: Path) -> dict[str, Path]:
    """`old`'s deployment in `new`, with fresh keys and certificates for the broker and both sides from the same
    CA, the same ACL users and passwords; `new`'s agents trust the old controller certificate and the new one,
    so they can be rolled out before the controller switches. InputError when `old` lacks its CA key."""
    ca_key_path = old / "ca" / "ca.key"
    if not ca_key_path.is_file():
        raise InputError(f"{ca_key_path}: missing; renewing signs with the CA's key (bring it back for this)")
    _new_directory(new)
    for side in ("ca", "redis", "controller", "agent", f"agent/{TRUSTED_DIR}"):
        for path in (old / side).glob("*"):
            if path.is_file() and path.name not in (KEY_FILE, CERT_FILE, "server.key", "server.crt", "redis-tls.conf"):
                text = path.read_text().replace(str(old.absolute()), str(new.absolute()))
                _write(new / side / path.name, text, path.stat().st_mode & 0o777)
    ca = read_certificate(old / "ca" / CA_FILE)
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    server = read_certificate(old / "redis" / "server.crt")
    hosts = [str(name.value) for name in server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
    now = datetime.datetime.now(datetime.UTC)
    _issue(new, ca_key, ca, hosts=hosts, now=now, trusted=f"controller-{now:%Y%m%d}.crt")
    port = next(
        line.split()[1]
        for line in (old / "redis" / "redis-tls.conf").read_text().splitlines()
        if line.startswith("tls-port")
    )
    _write_redis_conf(new, int(port))
    return {"controller": new / "controller", "agents": new / "agent", "redis": new / "redis"}


def _new_directory(directory: Path) -> None:
    """An empty directory for a deployment: itself enterable (Redis' own user must reach redis/), each side's
    part only by its owner."""
    if directory.exists() and any(directory.iterdir()):
        raise InputError(f"{directory}: not empty; `vtax certs` never overwrites key material")
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    for sub in ("ca", "redis", "controller", "agent", f"agent/{TRUSTED_DIR}"):
        (directory / sub).mkdir(mode=0o700)


def _issue(
    directory: Path,
    ca_key: rsa.RSAPrivateKey,
    ca: x509.Certificate,
    *,
    hosts: list[str],
    now: datetime.datetime,
    trusted: str,
) -> None:
    """The broker's server certificate and each side's key and certificate, signed by the CA; the controller's
    certificate also into the agents' trusted/ as `trusted`."""
    server_key = _key()
    server = _build(_name("vtax broker"), ca.subject, server_key.public_key(), ca_key, now, LEAF_DAYS, hosts=hosts)
    _write_key(directory / "redis" / "server.key", server_key)
    _write(directory / "redis" / "server.crt", _pem(server), 0o644)
    for side in USERS:
        key = _key()
        cert = _build(_name(f"vtax {side}"), ca.subject, key.public_key(), ca_key, now, LEAF_DAYS, client=True)
        _write_key(directory / side / KEY_FILE, key)
        _write(directory / side / CERT_FILE, _pem(cert), 0o644)
        if side == "controller":
            _write(directory / "agent" / TRUSTED_DIR / trusted, _pem(cert), 0o644)


def _write_redis_conf(directory: Path, port: int) -> None:
    redis = (directory / "redis").absolute()
    _write(
        redis / "redis-tls.conf",
        f"# include from redis.conf; TLS only, every client with a certificate of the vtax CA and an ACL user\n"
        f"port 0\ntls-port {port}\ntls-cert-file {redis}/server.crt\ntls-key-file {redis}/server.key\n"
        f"tls-ca-cert-file {redis}/{CA_FILE}\ntls-auth-clients yes\naclfile {redis}/users.acl\nprotected-mode yes\n",
        0o600,
    )


def read_env(path: Path) -> dict[str, str]:
    """The settings of a side's broker.env, as its service would see them."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def side_settings(side_dir: Path) -> BrokerConfig:
    """The broker settings a side's broker.env gives (DIR/controller or DIR/agent), as loading it would."""
    env = read_env(side_dir / "broker.env")
    return BrokerConfig(
        url=env["VTAX_BROKER"],
        username=env["VTAX_BROKER_USERNAME"],
        password=env["VTAX_BROKER_PASSWORD"],
        certs=Path(env["VTAX_BROKER_CERTS"]),
        prefix=env.get("VTAX_BROKER_PREFIX", ""),
    )


def check(directory: Path, *, warn_days: float = WARN_DAYS) -> list[CertStatus]:
    """Every certificate under `directory`: when it expires, and whether the directory's CA signed it."""
    if not directory.is_dir():
        raise InputError(f"{directory}: no such directory")
    paths = sorted(directory.rglob("*.crt"))
    if not paths:
        raise InputError(f"{directory}: holds no certificate (*.crt); `vtax certs init DIR` makes them")
    try:
        certs = {path: read_certificate(path) for path in paths}
    except ValueError as exc:
        raise InputError(str(exc)) from None
    authorities = [cert for cert in certs.values() if cert.issuer == cert.subject]
    found: list[CertStatus] = []
    for path, cert in certs.items():
        days = expires_in_days(cert)
        status = "expired" if days <= 0 else "expires_soon" if days <= warn_days else "ok"
        if authorities and status == "ok" and not any(_signed_by(cert, ca) for ca in authorities):
            status = "untrusted"
        found.append(
            {
                "path": str(path.relative_to(directory)),
                "subject": cert.subject.rfc4514_string(),
                "issuer": cert.issuer.rfc4514_string(),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "days_left": round(days, 1),
                "status": status,
            }
        )
    return found


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):  # another issuer, another key type, a bad signature
        return False
    return True


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vtax"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _build(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey,
    signer: rsa.RSAPrivateKey,
    now: datetime.datetime,
    days: int,
    *,
    ca: bool = False,
    client: bool = False,
    hosts: list[str] | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a little clock skew between machines
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_alt_name(h) for h in hosts]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    _write(path, pem, 0o600)


def _write(path: Path, text: str, mode: int) -> None:
    """Created with its mode from the start: a key is never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
