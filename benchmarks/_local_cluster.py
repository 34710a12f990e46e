"""A throwaway broker and agent workers on this machine, for the distributed benchmarks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.broker import Keys
from agent.settings import BrokerConfig
from controller import certs
from controller.distributed import list_agents, wait_for_broker
from controller.lab.netns import agent_command, redis_command
from controller.spec import Experiment, parse


def noop_experiment(name: str, agents: list[str], *, steady: float, lead: float, trials: int) -> Experiment:
    """One condition, every agent running the noop workload: vtax's own orchestration and nothing else."""
    spec = {
        "name": name,
        "agents": [{"name": n} for n in agents],
        "conditions": [{"name": "only", "baseline": True}],
        "workloads": [{"kind": "noop", "agents": agents}],
        "timing": {"warmup": 0, "steady": steady, "cooldown": 0, "lead": lead},
        "repetitions": trials,
    }
    return parse(json.dumps(spec), f"<{name}>")


@contextmanager
def local_cluster(workers: list[list[str]], *, secure: bool = False) -> Iterator[BrokerConfig]:
    """Start redis-server on a free loopback port and one `vtax agent` process per list of names; with
    `secure`, set up as the secure-deployment guide says (TLS, ACL users, signed tasks). Yields the
    controller's broker settings."""
    program = shutil.which("redis-server")
    if program is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logs = Path(tempfile.mkdtemp(prefix="vtax-bench-"))
    url = f"{'rediss' if secure else 'redis'}://127.0.0.1:{port}/0"
    config, agent_env = None, {}
    controller = BrokerConfig(url=url)
    if secure:
        certs.init(logs / "certs", hosts=["127.0.0.1"], broker_url=url, port=port)
        config = logs / "certs" / "redis" / "redis-tls.conf"
        agent_env = certs.read_env(logs / "certs" / "agent" / "broker.env")
        controller = certs.side_settings(logs / "certs" / "controller")
    procs = [subprocess.Popen(redis_command(program, "127.0.0.1", port, config), stdout=subprocess.DEVNULL)]
    try:
        client = wait_for_broker(controller)
        for i, names in enumerate(workers):
            cmd = agent_command(url, names[0], zone="bench", allow=["127.0.0.0/8"], address="127.0.0.1")
            for name in names[1:]:
                cmd += ["--name", name]
            with (logs / f"worker{i}.log").open("wb") as log:
                env = {**os.environ, **agent_env}
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, env=env))
        expected = sum(len(names) for names in workers)
        give_up = time.monotonic() + 120
        while len(list_agents(client, Keys())) < expected:
            if time.monotonic() > give_up:
                raise SystemExit(f"agents did not register; logs in {logs}")
            time.sleep(0.2)
        yield controller
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(logs, ignore_errors=True)
