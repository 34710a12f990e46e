"""A userspace one-way delay for kernels without `tc netem`: packets queued by NFQUEUE are held for a
fixed time, in arrival order, then accepted. Run inside the appliance namespace by `vtax lab appliance`.

    python -m controller.lab.delayer --queue 7 --delay-ms 5

Prints READY once bound. Adds about 0.1–0.2 ms of its own per packet on top of the delay.
"""

from __future__ import annotations

import argparse
import collections
import select
import signal
import time
from typing import Any

from netfilterqueue import NetfilterQueue


def run(queue: int, delay_s: float) -> None:
    held: collections.deque[tuple[float, Any]] = collections.deque()
    nfq = NetfilterQueue()
    nfq.bind(queue, lambda packet: held.append((time.monotonic() + delay_s, packet)), max_len=65536)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fd = nfq.get_fd()
    print("READY", flush=True)
    try:
        while not stop:
            timeout = max(0.0, held[0][0] - time.monotonic()) if held else 0.5
            readable, _, _ = select.select([fd], [], [], timeout)
            if readable:
                nfq.run(block=False)
            now = time.monotonic()
            while held and held[0][0] <= now:
                held.popleft()[1].accept()
    finally:
        for _, packet in held:
            packet.accept()
        nfq.unbind()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args()
    run(args.queue, args.delay_ms / 1000)


if __name__ == "__main__":
    main()
