"""vSphere collection: the time to read one 10-minute window of vtax's counter set (13 counters) for N VMs
and their hosts from a vCenter simulator at vCenter's 20 s realtime interval (30 samples per series).

Side by side in one run, per size: vtax's PerfReader (CSV answers, calls filled to maxQueryMetrics, a few
in parallel) and the plain way (one QueryPerf per entity, normal format, one after another) on a subset,
scaled to N. The goal: 2,000 VMs in <= 10 s. Prints one JSON object.

    .venv/bin/python benchmarks/vsphere_collect.py --vms 500 2000 --plain-sample 200
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from _vcsim import VcSim
from pyVmomi import vim

from controller.vsphere.connection import Vcenter, VcenterConfig
from controller.vsphere.inventory import Inventory
from controller.vsphere.perf import PerfReader

WINDOW_S = 600
HOSTS_PER_CLUSTER = 8


def plain_read(reader: PerfReader, entities: list[Any], *, start: float, end: float) -> int:
    """The straightforward client: one entity per call, the default (XML) format, sequential."""
    values = 0
    for entity in entities:
        ids = [vim.PerformanceManager.MetricId(counterId=c.key, instance="") for c in reader.counters]
        spec = vim.PerformanceManager.QuerySpec(
            entity=entity,
            metricId=ids,
            intervalId=20,
            startTime=datetime.fromtimestamp(start, UTC),
            endTime=datetime.fromtimestamp(end, UTC),
        )
        for metric in reader.manager.QueryPerf(querySpec=[spec]) or []:
            values += sum(len(series.value) for series in metric.value or [])
    return values


def measure(vms: int, plain_sample: int) -> dict[str, float | int]:
    clusters = max(1, vms // 200)
    per_pool = vms // clusters
    with VcSim(clusters=clusters, hosts=HOSTS_PER_CLUSTER, vms=per_pool, refresh=20) as sim:
        config = VcenterConfig(url=sim.url, user=sim.user, password=sim.password, insecure=True)
        with Vcenter(config=config) as vcenter:
            began = time.perf_counter()
            inventory = Inventory(vcenter=vcenter)
            inventory_s = time.perf_counter() - began
            entities = [vm.ref for vm in inventory.vms.values()] + [h.ref for h in inventory.hosts.values()]
            reader = PerfReader(vcenter=vcenter)
            end = time.time()
            began = time.perf_counter()
            samples = reader.read(entities, start=end - WINDOW_S, end=end, interval=20)
            vtax_s = time.perf_counter() - began
            subset = entities[:plain_sample]
            began = time.perf_counter()
            plain_values = plain_read(reader, subset, start=end - WINDOW_S, end=end)
            plain_s = (time.perf_counter() - began) * len(entities) / len(subset)
    return {
        "vms": len(inventory.vms),
        "hosts": len(inventory.hosts),
        "values": len(samples),
        "inventory_s": round(inventory_s, 3),
        "vtax_collect_s": round(vtax_s, 3),
        "plain_collect_s_scaled": round(plain_s, 2),
        "plain_values_sampled": plain_values,
        "speedup_vs_plain": round(plain_s / vtax_s, 1),
        "max_query_metrics": reader.max_metrics,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--plain-sample", type=int, default=200, help="entities the plain client reads (scaled)")
    args = parser.parse_args()
    results = [measure(n, args.plain_sample) for n in args.vms]
    largest = max(results, key=lambda r: r["vms"])
    print(
        json.dumps(
            {
                "window_s": WINDOW_S,
                "interval_s": 20,
                "counters": 13,
                "results": results,
                "goal_2000_vms_s": 10.0,
                "goal_met": largest["vms"] < 2000 or largest["vtax_collect_s"] <= 10.0,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
