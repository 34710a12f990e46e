"""vCenter's counters as vtax metrics (controller.metrics): which metric each counter feeds, by the role of its
entity (a host, an agent VM, an appliance VM) and whether it is one instance (a logical CPU) or the total."""

from __future__ import annotations

from controller.metrics import HOST_METRICS


def summaries(role: str, counter: str, instance: str, value: float, per_vcpu: float) -> list[tuple[str, float]]:
    """The vtax metrics one counter value feeds, by the role of its entity (and instance: aggregate or one)."""
    if role == "host":
        if instance:
            return [(name, value) for name in _HOST_INSTANCE_COUNTERS.get(counter, ())]
        return [(name, value) for name in _HOST_COUNTERS.get(counter, ())]
    if instance:
        return []
    prefix = "vm" if role == "agent_vm" else "appliance"
    names = _VM_COUNTERS.get(counter, ())
    return [
        (f"{prefix}.{name}", per_vcpu if name in _PER_VCPU else value)
        for name in names
        if f"{prefix}.{name}" in HOST_METRICS
    ]


_HOST_COUNTERS = {
    "cpu.usage.average": ("host.cpu_pct",),
    "cpu.usagemhz.average": ("host.cpu_mhz",),
    "mem.usage.average": ("host.mem_pct",),
    "net.received.average": ("host.net_rx_mbps",),
    "net.transmitted.average": ("host.net_tx_mbps",),
    "net.packetsRx.summation": ("host.net_packets_per_s",),
    "net.packetsTx.summation": ("host.net_packets_per_s",),
    "net.droppedRx.summation": ("host.net_dropped_per_s",),
    "net.droppedTx.summation": ("host.net_dropped_per_s",),
}
_HOST_INSTANCE_COUNTERS = {"cpu.usage.average": ("host.cpu_max_core_pct",)}
HOST_MAXIMA = {"host.cpu_max_core_pct"}  # within a host: the busiest instance
_VM_COUNTERS = {
    "cpu.usage.average": ("cpu_pct",),
    "cpu.usagemhz.average": ("cpu_mhz",),
    "cpu.ready.summation": ("ready_pct",),
    "cpu.costop.summation": ("costop_pct",),
    "cpu.latency.average": ("cpu_latency_pct",),
    "net.droppedRx.summation": ("net_dropped_per_s",),
    "net.droppedTx.summation": ("net_dropped_per_s",),
    "mem.active.average": ("mem_active_mb",),  # MiB (perf.convert)
}
_PER_VCPU = {"ready_pct", "costop_pct"}
