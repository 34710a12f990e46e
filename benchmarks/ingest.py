"""Ingest: how many points per second one agent's InfluxDB sink sustains, and how long a measured point
takes to be stored, against a local victoria-metrics (InfluxDB v2 write API) started by this script.

Prints one JSON object: points/s through the sink (submit to fully flushed) and the measurement-to-stored
lag of single points (submit to visible in the server's export API), p50 and max; the promise is <= 2 s.

    .venv/bin/python benchmarks/ingest.py --points 200000 --probes 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from agent.sink import InfluxConfig, InfluxSink
from workloads.serving import free_port


def visible(url: str, run: str) -> bool:
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=5).close()
    data = urllib.parse.urlencode({"match[]": f'{{__name__="vtax_bench_value",run="{run}"}}'}).encode()
    with urllib.request.urlopen(f"{url}/api/v1/export", data=data, timeout=5) as reply:
        return bool(reply.read().strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args()
    program = shutil.which("victoria-metrics")
    if program is None:
        raise SystemExit("victoria-metrics is not installed (apt-get install victoria-metrics)")
    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="vtax-ingest-") as tmp:
        server = subprocess.Popen(
            [program, f"-storageDataPath={tmp}/vm", f"-httpListenAddr=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"{url}/ping", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            sink = InfluxSink(InfluxConfig(url=url, spool_dir=Path(tmp) / "spool"))
            now_us = int(time.time() * 1e6)
            lines = [f"vtax_bench,run=bulk,agent=a{i % 16} value={i}.0 {now_us + i}" for i in range(args.points)]
            began = time.perf_counter()
            sink.submit(lines)
            if not sink.flush(600):
                raise SystemExit("the sink did not flush")
            rate = args.points / (time.perf_counter() - began)
            lags = []
            for probe in range(args.probes):
                run = f"probe{probe}"
                submitted = time.perf_counter()
                sink.submit([f"vtax_bench,run={run} value=1.0 {int(time.time() * 1e6)}"])
                while not visible(url, run):
                    time.sleep(0.02)
                lags.append(time.perf_counter() - submitted)
                time.sleep(0.2)
            sink.close()
        finally:
            server.terminate()
            server.wait(timeout=20)
    print(
        json.dumps(
            {
                "benchmark": "ingest",
                "server": "victoria-metrics (InfluxDB v2 write API)",
                "points": args.points,
                "points_per_s": round(rate),
                "lag_s": {"p50": round(statistics.median(lags), 3), "max": round(max(lags), 3)},
                "promise_s": 2.0,
                "meets_promise": max(lags) <= 2.0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
