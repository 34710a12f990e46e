"""The host-side metrics: the Linux host's (a local or hypervisor agent's sampler) and vCenter's (hosts running
agents, their agent VMs, the appliance VMs on them), with their units, directions and how hosts combine.

A data table: it imports nothing of the controller, so the spec layer, the analysis and the wings all read it.
Each workload kind's own metrics are in its module (`workloads.<kind>.METRICS`).
"""

from __future__ import annotations

from workloads.base import MetricInfo

# reported only by vCenter (`--vcenter`), and only by a hypervisor agent with `appliance_processes`
VSPHERE_ONLY = frozenset(
    {
        "host.cpu_mhz",
        "host.mem_pct",
        "host.net_rx_mbps",
        "host.net_tx_mbps",
        "host.net_packets_per_s",
        "host.net_dropped_per_s",
        "vm.cpu_pct",
        "vm.ready_pct",
        "vm.costop_pct",
        "vm.cpu_latency_pct",
        "appliance.cpu_pct",
        "appliance.cpu_mhz",
        "appliance.ready_pct",
        "appliance.net_dropped_per_s",
        "vm.mem_active_mb",
        "appliance.mem_active_mb",
    }
)
NEEDS_APPLIANCE_PROCESSES = frozenset({"appliance.host_cpu_pct", "appliance.rss_mb"})
# the memory a soak tests for growth, as it does each agent process's (controller.soak)
MEMORY_METRICS = ("host.mem_used_mb", "appliance.rss_mb", "appliance.mem_active_mb", "vm.mem_active_mb")

HOST_METRICS: dict[str, MetricInfo] = {
    "host.cpu_pct": MetricInfo(unit="%", across_agents="mean", better="lower", description="busy CPU, all cores"),
    "host.softirq_pct": MetricInfo(
        unit="%", across_agents="mean", better="lower", description="softirq CPU (packet processing), all cores"
    ),
    "host.ctx_switches_per_s": MetricInfo(
        unit="1/s", across_agents="mean", better="lower", description="context switches"
    ),
    "host.cpu_max_core_pct": MetricInfo(
        unit="%",
        across_agents="mean",
        better="lower",
        description="the host's busiest logical CPU (a saturated packet-processing core hides in the average)",
    ),
    "host.cpu_per_gbps": MetricInfo(
        unit="% per Gbit/s", across_agents="mean", better="lower", description="host CPU % per Gbit/s of goodput"
    ),
    "appliance.host_cpu_pct": MetricInfo(
        unit="% of all cores",
        across_agents="mean",
        better="lower",
        description="CPU of the processes matching a hypervisor agent's appliance_processes, on host.cpu_pct's scale",
    ),
    # from vCenter (the vSphere wing): the hosts running agents, their agent VMs and appliance VMs
    "host.cpu_mhz": MetricInfo(unit="MHz", across_agents="mean", better="lower", description="ESXi host CPU used"),
    "host.mem_pct": MetricInfo(unit="%", across_agents="mean", better="lower", description="ESXi host memory used"),
    "host.net_rx_mbps": MetricInfo(unit="Mbit/s", across_agents="sum", better="higher", description="host receive"),
    "host.net_tx_mbps": MetricInfo(unit="Mbit/s", across_agents="sum", better="higher", description="host send"),
    "host.net_packets_per_s": MetricInfo(
        unit="1/s", across_agents="sum", better="higher", description="host packets received + sent"
    ),
    "host.net_dropped_per_s": MetricInfo(
        unit="1/s", across_agents="sum", better="lower", description="host packets dropped (receive + send)"
    ),
    "vm.cpu_pct": MetricInfo(unit="%", across_agents="mean", better="lower", description="agent VMs' CPU usage"),
    "vm.ready_pct": MetricInfo(
        unit="% per vCPU", across_agents="mean", better="lower", description="agent VMs' CPU ready time per vCPU"
    ),
    "vm.costop_pct": MetricInfo(
        unit="% per vCPU", across_agents="mean", better="lower", description="agent VMs' co-stop time per vCPU"
    ),
    "vm.cpu_latency_pct": MetricInfo(
        unit="%", across_agents="mean", better="lower", description="agent VMs' CPU latency (time not run)"
    ),
    "appliance.cpu_pct": MetricInfo(
        unit="%", across_agents="mean", better="lower", description="appliance VMs' CPU usage"
    ),
    "appliance.cpu_mhz": MetricInfo(
        unit="MHz", across_agents="sum", better="lower", description="appliance VMs' CPU used, all hosts"
    ),
    "appliance.ready_pct": MetricInfo(
        unit="% per vCPU", across_agents="mean", better="lower", description="appliance VMs' CPU ready per vCPU"
    ),
    "appliance.net_dropped_per_s": MetricInfo(
        unit="1/s", across_agents="sum", better="lower", description="packets the appliance VMs dropped"
    ),
    "host.mem_used_mb": MetricInfo(
        unit="MiB", across_agents="sum", better="lower", description="Linux hosts' memory in use (total − available)"
    ),
    "appliance.rss_mb": MetricInfo(
        unit="MiB",
        across_agents="sum",
        better="lower",
        description="resident memory of the processes matching a hypervisor agent's appliance_processes",
    ),
    "vm.mem_active_mb": MetricInfo(
        unit="MiB", across_agents="sum", better="lower", description="agent VMs' active memory (vSphere mem.active)"
    ),
    "appliance.mem_active_mb": MetricInfo(
        unit="MiB", across_agents="sum", better="lower", description="appliance VMs' active memory (mem.active)"
    ),
}
