"""Agent clocks: NTP-style offset measurement over the engine, keeping the lowest-RTT exchange.

offset = agent clock − controller clock, estimated as t_agent − (t_send + t_receive) / 2; its uncertainty is
half the round trip of the exchange it came from. The engine sends each agent its offset with every request,
and the agent converts times at its edge (agent.edge).
"""

from __future__ import annotations

import time
from concurrent.futures import wait
from dataclasses import dataclass

from agent import wire
from controller.engine import Call, Engine
from controller.errors import InfrastructureError

ROUNDS = 16  # the fastest of up to 16 exchanges: a closer estimate than of 8 where queueing delays vary
MIN_ROUNDS = 4  # every agent is pinged at least this often
GOOD_ENOUGH_S = 0.001  # then only while its offset is known less well than this (or than the run asks)
TIMEOUT_S = 10.0
BATCH = 32  # agents pinged at once (below the engine's parallel sending)


@dataclass(frozen=True, kw_only=True)
class ClockReading:
    offset_s: float
    uncertainty_s: float
    rtt_s: float


def measure(engine: Engine, agents: list[str], *, good_enough: float, rounds: int = ROUNDS) -> dict[str, ClockReading]:
    """Ping every agent up to `rounds` times, in batches of at most BATCH, each exchange timed from its own send to
    its own reply; the fastest exchange wins. After MIN_ROUNDS, only the agents whose offset is known less well
    than ±`good_enough` seconds are pinged again: a thousand agents × 16 rounds took 20 s, most of it on agents
    already known well enough.

    A batch holds at most one agent of each process (one `vtax agent` serving many names): pinged together, each
    one's reply waited behind the others', and no round trip was short. It is small enough to be sent one ping
    after the other: 64 sent by the engine's threads at once came back with round trips of 16 ms (p50), as the
    threads' handoffs stamped the replies late."""
    best: dict[str, ClockReading] = {}
    for done in range(rounds):
        wanted = [a for a in agents if done < MIN_ROUNDS or best[a].uncertainty_s > good_enough]
        for batch in _spread(wanted, engine):
            _exchange(engine, batch, best)
    return best


def _spread(agents: list[str], engine: Engine) -> list[list[str]]:
    """`agents` in batches of at most BATCH that hold at most one agent of each process."""
    queues: dict[object, list[str]] = {}
    for agent in agents:
        limit = engine.task_limit(agent)
        queues.setdefault(limit[0] if limit is not None else agent, []).append(agent)
    depth = max((len(q) for q in queues.values()), default=0)
    layers = [[q[i] for q in queues.values() if i < len(q)] for i in range(depth)]
    return [layer[j : j + BATCH] for layer in layers for j in range(0, len(layer), BATCH)]


def _exchange(engine: Engine, agents: list[str], best: dict[str, ClockReading]) -> None:
    """One ping to each of `agents`; the readings that beat the best so far replace them."""
    sent = dict(zip(agents, engine.call_all([Call(agent, wire.PING, {}) for agent in agents]), strict=True))
    _, missing = wait([each.future for each in sent.values()], timeout=TIMEOUT_S)
    if missing:
        silent = [a for a, each in sent.items() if each.future in missing]
        raise InfrastructureError(f"no clock reply within {TIMEOUT_S:g} s from: {', '.join(silent)}")
    for agent, each in sent.items():
        t_agent = each.future.result()["time"]
        replied = each.replied_at or time.time()  # its stamp may lag the wait by a moment: later, never sooner
        rtt = replied - each.sent_at
        if agent not in best or rtt < best[agent].rtt_s:
            offset = t_agent - (each.sent_at + replied) / 2
            best[agent] = ClockReading(offset_s=offset, uncertainty_s=rtt / 2, rtt_s=rtt)
