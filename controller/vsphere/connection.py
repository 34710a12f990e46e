"""The connection to vCenter or an ESXi host: settings, TLS, login, and one-line errors for what goes wrong."""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from controller.errors import InfrastructureError, InputError
from controller.vsphere.config import VcenterConfig

log = logging.getLogger("vtax.vsphere")
T = TypeVar("T")


class VcenterError(InfrastructureError):
    """vCenter is unreachable or failed a call (exit 3)."""


class VcenterLoginError(InputError):
    """Credentials or TLS settings are wrong: fixed by configuration (exit 2)."""


def _tls(config: VcenterConfig) -> ssl.SSLContext:
    if config.insecure:
        return ssl._create_unverified_context()
    if config.ca_bundle is not None and not config.ca_bundle.is_file():
        raise VcenterLoginError(f"vCenter settings: ca_bundle: {config.ca_bundle} is not a file")
    return ssl.create_default_context(cafile=str(config.ca_bundle) if config.ca_bundle else None)


class Vcenter:
    """A logged-in session; use as a context manager so the session is closed."""

    def __init__(self, *, config: VcenterConfig) -> None:
        self.config = config
        try:
            self.si = SmartConnect(
                host=config.host,
                port=config.port,
                user=config.user,
                pwd=config.password.get_secret_value(),
                sslContext=_tls(config),
                protocol="https" if config.url.startswith("https") else "http",
                path=urllib.parse.urlsplit(config.url).path or "/sdk",
                httpConnectionTimeout=config.timeout,
                disableSslCertValidation=config.insecure,
            )
        except vim.fault.InvalidLogin:
            raise VcenterLoginError(
                f"vCenter {config.url}: login as {config.user!r} refused: wrong user or password"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise VcenterLoginError(
                f"vCenter {config.url}: TLS certificate not trusted ({exc.verify_message}); "
                "give its CA with --vcenter-ca-bundle, or --vcenter-insecure in a lab"
            ) from None
        except ssl.SSLError as exc:
            raise VcenterError(f"vCenter {config.url}: TLS handshake failed: {exc.reason or exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise VcenterError(f"vCenter {config.url}: unreachable: {reason}") from None
        except vmodl.MethodFault as exc:
            raise VcenterError(f"vCenter {config.url}: {exc.msg or type(exc).__name__}") from None
        self.content = self.si.RetrieveContent()
        self._login_lock = threading.Lock()

    def retry(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)`, logging in again once if vCenter forgot the session (a restart, an idle timeout): a soak
        test outlives sessions. Object references stay valid: the new session rides on the same connection."""
        try:
            return call(*args)
        except vim.fault.NotAuthenticated:
            with self._login_lock:
                if not self._session_alive():  # else another thread has logged in meanwhile
                    log.warning("vCenter %s: session lost; logging in again", self.config.url)
                    self.content.sessionManager.Login(
                        userName=self.config.user, password=self.config.password.get_secret_value()
                    )
            return call(*args)

    def _session_alive(self) -> bool:
        try:
            return self.content.sessionManager.currentSession is not None
        except vim.fault.NotAuthenticated:
            return False

    def __enter__(self) -> Vcenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError, vmodl.MethodFault, http.client.HTTPException):
            Disconnect(self.si)  # else the session ends with the server's timeout

    @property
    def about(self) -> str:
        return f"{self.content.about.fullName} ({self.content.about.apiType})"

    def now(self) -> float:
        """The server's clock, as a Unix time: windows are asked for in it."""
        return self.si.CurrentTime().timestamp()

    def option(self, key: str) -> Any:
        """A vCenter advanced setting, or None where it does not exist (ESXi, or not set)."""
        manager = self.content.setting
        if manager is None:
            return None
        try:
            found = manager.QueryOptions(name=key)
        except vim.fault.InvalidName:
            return None
        return found[0].value if found else None


def describe_fault(exc: BaseException) -> str:
    """One line for a vSphere fault or a transport error."""
    if isinstance(exc, vmodl.MethodFault):
        return exc.msg or type(exc).__name__
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
