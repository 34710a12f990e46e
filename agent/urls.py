"""URLs of the services vtax talks to: checked before use, and never shown with their password.

Any text that may carry a URL (an error, a log line, a stored reason) goes through `redact` before it is
printed, logged or stored.
"""

from __future__ import annotations

import re
import urllib.parse

# scheme://user:password@ or scheme://:password@ — the password part, wherever it stands in a text
_CREDENTIALS = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^@\s/]+)(?=@)", re.IGNORECASE)
BROKER_SCHEMES = ("redis", "rediss", "unix")


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('head')}***", text)


def without_credentials(url: str) -> str:
    """The URL without its user and password, for clients that take those separately."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.username is None and parsed.password is None:
        return url
    host = parsed.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parsed.port}" if parsed.port else "")
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def check_broker(url: str) -> str:
    """A Redis URL the broker client accepts, or ValueError saying what is expected."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in BROKER_SCHEMES or (parsed.scheme != "unix" and not parsed.hostname):
        raise ValueError(
            f"--broker: {redact(url)!r} is not a Redis URL; expected redis://[:PASSWORD@]HOST:PORT/DB "
            "(rediss:// for TLS), e.g. redis://10.0.0.5:6379/0"
        )
    return url


def check_http(url: str) -> str:
    """An http(s) URL with a host, or ValueError saying what is expected."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{redact(url)!r} is not an http(s) URL; expected e.g. http://influx.example:8086")
    return url
