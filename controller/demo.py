"""The built-in demo: iperf3 over loopback, direct against vtax's userspace relay appliance.

Needs no root and no services; 2 conditions × 5 repetitions of 4 s finish in under a minute. Many short
trials rather than a few long ones: this machine's noise comes in bursts of seconds, and more trials
average over more of them.
"""

from controller.spec import Experiment, parse

DEMO_SPEC = """
name: demo
description: >
  iperf3 over loopback. Baseline `direct`; `relay` sends the same traffic through vtax's userspace TCP
  relay, a stand-in for an inline security appliance. What does the relay cost?
agents:
  - name: client
  - name: server
conditions:
  - name: direct
    baseline: true
  - name: relay
    appliance: relay
workloads:
  - kind: iperf3
    agents: [client]
    server: server
    params: {protocol: tcp, streams: 1}
timing: {warmup: 0.5, steady: 3, cooldown: 0.5, lead: 0.5}
repetitions: 5
order: interleaved
"""


def demo_experiment() -> Experiment:
    return parse(DEMO_SPEC, "<demo>")
