"""vtax's reference appliance: a userspace TCP relay between clients and a server.

Every byte is copied through user space by Python threads, which costs what an inline userspace
appliance costs. Run as `python -m controller.relay --upstream HOST:PORT`; it prints `LISTENING <port>`
once it accepts connections. `RelayProcess` starts and stops it around a trial.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading

from controller.errors import InfrastructureError

_CHUNK = 256 * 1024


def _pump(source: socket.socket, sink: socket.socket) -> None:
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    try:
        while n := source.recv_into(buffer):
            sink.sendall(view[:n])
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket, upstream: tuple[str, int]) -> None:
    try:
        server = socket.create_connection(upstream, timeout=10)
    except OSError:
        client.close()
        return
    server.settimeout(None)
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pump, args=(server, client), daemon=True)
    back.start()
    _pump(client, server)
    back.join()
    client.close()
    server.close()


def _exit_with_parent() -> None:
    """The controller holds this relay's stdin open: when it dies, even by SIGKILL, stdin ends and so does the
    relay."""
    sys.stdin.buffer.read()
    os._exit(0)


def serve(listen: str, upstream: tuple[str, int]) -> None:
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
    with socket.create_server((listen, 0), backlog=128) as listener:
        print(f"LISTENING {listener.getsockname()[1]}", flush=True)
        while True:
            client, _ = listener.accept()
            threading.Thread(target=_relay, args=(client, upstream), daemon=True).start()


class RelayProcess:
    """A relay child process in front of one server, for the length of a trial."""

    def __init__(self, *, upstream_host: str, upstream_port: int, listen: str = "127.0.0.1") -> None:
        cmd = [
            sys.executable,
            "-m",
            "controller.relay",
            "--listen",
            listen,
            "--upstream",
            f"{upstream_host}:{upstream_port}",
        ]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "LISTENING":
            self.stop()
            raise InfrastructureError("the relay appliance did not start")
        self.host, self.port = listen, int(line[1])

    def stop(self) -> None:
        self._proc.kill()
        self._proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    serve(args.listen, (host, int(port)))


if __name__ == "__main__":
    main()
