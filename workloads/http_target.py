"""vtax's built-in HTTP target: serves the RFC 9411 object sizes and accepts uploads, fast enough on one
core not to be the bottleneck of a Python load generator.

    python -m workloads.http_target --bind 127.0.0.1 --port 8080 --workers 2

GET /1k /16k /64k /256k returns that many bytes; POST /upload reads its body and answers 204-like 200;
GET /_vtax/stats returns the target's own CPU seconds so a saturated target can be flagged. HTTP/1.1
keep-alive, with `Connection: close` honoured. Workers share the port with SO_REUSEPORT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time

import psutil

from workloads.objects import SIZES


def _response(body: bytes, *, close: bool, content_type: bytes = b"application/octet-stream") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(body))
    return head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + body


_OBJECTS = {f"/{name}".encode(): b"x" * size for name, size in SIZES.items()}


def _stats() -> bytes:
    """CPU seconds of the whole target: the parent and every worker."""
    parent = psutil.Process(os.getppid()) if os.environ.get("VTAX_TARGET_WORKER") else psutil.Process()
    cpu = 0.0
    for proc in [parent, *parent.children()]:
        try:
            t = proc.cpu_times()
            cpu += t.user + t.system
        except psutil.Error:
            continue
    return json.dumps({"cpu_s": cpu, "time": time.time(), "cores": psutil.cpu_count()}).encode()


class HttpProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 for load testing: request line, Content-Length, Connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.body_left = 0
        self.pending: tuple[bytes, bool] = (b"", False)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.body_left:
                taken = min(self.body_left, len(self.buffer))
                self.buffer, self.body_left = self.buffer[taken:], self.body_left - taken
                if self.body_left:
                    return
                if self._send(*self.pending):
                    return
                continue
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) < 2:
                self.transport.close()
                return
            method, path = parts[0], parts[1].split(b"?")[0]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
            close = headers.get(b"connection", b"").lower() == b"close"
            length = int(headers.get(b"content-length", b"0") or 0)
            if method == b"GET" and path in _OBJECTS:
                reply = _response(_OBJECTS[path], close=close)
            elif method == b"GET" and path == b"/_vtax/stats":
                reply = _response(_stats(), close=close, content_type=b"application/json")
            elif method == b"POST" and path == b"/upload":
                reply = _response(b"", close=close)
            else:
                reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n" + (
                    b"Connection: close\r\n\r\n" if close else b"\r\n"
                )
            if length:
                self.body_left, self.pending = length, (reply, close)
                continue
            if self._send(reply, close):
                return

    def _send(self, reply: bytes, close: bool) -> bool:
        """Write one response; True when the connection is now closed."""
        self.transport.write(reply)
        if close:
            self.transport.close()
        return close


def _listener(bind: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((bind, port))
    sock.listen(1024)
    return sock


def _serve(bind: str, port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(HttpProtocol, sock=_listener(bind, port))
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def run(bind: str, port: int, workers: int) -> None:
    """Start `workers` processes on the port; print READY once they accept connections."""
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            os.environ["VTAX_TARGET_WORKER"] = "1"
            try:
                _serve(bind, port)
            finally:
                os._exit(0)
        children.append(pid)

    def stop(*_: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection((bind, port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    print("READY", flush=True)
    os.waitpid(-1, 0)
    stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    run(args.bind, args.port, args.workers)


if __name__ == "__main__":
    main()
