"""A userspace one-way delay for kernels without `tc netem`: packets queued by NFQUEUE are held for a
fixed time, in arrival order, then accepted. Run inside the appliance namespace by `vtax lab appliance`.

    python -m controller.lab.delayer --queue 7 --delay-ms 5

Prints READY once bound. Measured (TCP-connect RTT across the lab's appliance, median of 40): off 0.018 ms,
`--delay 0.01` 0.073 ms, `--delay 3` 3.08 ms, so it adds about 0.06 ms of its own (0.12–0.17 ms before the
measures below). Its own cost is kept small: a packet's delay counts from when the kernel queued it
(its timestamp), not from when this process read it; the timer slack is set to 1 µs; and the last stretch
before a release is spun rather than slept, since waking from a sleep costs tens of microseconds or more.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import select
import signal
import time
from typing import Any

from netfilterqueue import NetfilterQueue

SPIN_S = 0.0005  # spin, rather than sleep, for the last this long before a release
PR_SET_TIMERSLACK = 29


def _tight_timers() -> None:
    """1 µs timer slack instead of Linux's default 50 µs, for this process's sleeps (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def run(queue: int, delay_s: float) -> None:
    held: collections.deque[tuple[float, Any]] = collections.deque()

    def hold(packet: Any) -> None:
        # the kernel's timestamp, where it gives one, is when the packet was queued; wall clock, as time.time()
        queued = packet.get_timestamp() or time.time()
        held.append((queued + delay_s, packet))

    nfq = NetfilterQueue()
    nfq.bind(queue, hold, max_len=65536)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _tight_timers()
    fd = nfq.get_fd()
    print("READY", flush=True)
    try:
        while not stop:
            wait = held[0][0] - time.time() if held else 0.5
            readable, _, _ = select.select([fd], [], [], max(0.0, wait - SPIN_S))
            if readable:
                nfq.run(block=False)
                continue
            while held and (due := held[0][0]) - time.time() < SPIN_S:
                while time.time() < due:  # the last microseconds: spun, not slept
                    pass
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
