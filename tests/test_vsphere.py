"""vSphere against a real vCenter simulator (vtax-vcsim, built from govmomi's source by the tests).

The simulator keeps real time at a 1 s refresh interval (vCenter: 20 s), so short trials get several samples
each, and a test can set what a counter reads for an entity: known load must land in the right trial,
entity and unit.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.identity import swapped_uuid
from agent.wire import HostSample, TrialTags
from controller.hostsources import TrialWindow
from controller.spec import ApplianceSelector, VsphereAction, VsphereSpec
from controller.store import Store
from controller.vsphere.actions import run_action
from controller.vsphere.connection import Vcenter, VcenterConfig
from controller.vsphere.perf import HISTORICAL_INTERVAL_S, PerfReader, convert
from controller.vsphere.session import Vsphere
from controller.vsphere.source import VsphereHostSource
from tests.cluster import Agents, RedisServer, TimeSeriesServer
from tests.conftest import VTAX, Vtax
from tests.grafana import dashboard_answers
from tests.vcsim import VCSIM_SCRIPT, VcSim

HOST, OTHER_HOST = "DC0_C0_H0", "DC0_C0_H1"
VM = [f"DC0_C0_RP0_VM{i}" for i in range(4)]  # VM0, VM1: agents; VM3: the appliance


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: the CA bundle that makes the simulator trusted."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def sim(certificate: tuple[Path, Path]) -> Iterator[VcSim]:
    """One cluster of two hosts and four VMs, every VM moved to the first host."""
    with VcSim(clusters=1, hosts=2, vms=4, refresh=1, tls_cert=certificate[0], tls_key=certificate[1]) as server:
        with _vsphere(server, certificate[0]) as vsphere:
            run_action(vsphere, VsphereAction(vsphere="relocate", vms=["*"], host=HOST), stage="setup", condition="t")
        yield server


class _vsphere:
    """A Vsphere session to the simulator, closed on exit."""

    def __init__(self, server: VcSim, ca: Path, spec: VsphereSpec | None = None) -> None:
        config = VcenterConfig(url=server.url, user=server.user, password=server.password, ca_bundle=ca)
        self.vsphere = Vsphere(vcenter=Vcenter(config=config), spec=spec or VsphereSpec())

    def __enter__(self) -> Vsphere:
        return self.vsphere

    def __exit__(self, *exc: object) -> None:
        self.vsphere.vcenter.close()


def _flags(sim: VcSim, certificate: tuple[Path, Path]) -> list[str]:
    return ["--vcenter", sim.url, "--vcenter-user", sim.user, "--vcenter-ca-bundle", str(certificate[0])]


def _set(sim: VcSim, *settings: str) -> str:
    """A hook command that sets simulator counters."""
    return f"python {VCSIM_SCRIPT} {sim.control} {' '.join(settings)}"


def test_tls_is_verified_by_default_and_errors_are_one_line(
    vtax: Vtax, sim: VcSim, certificate: tuple[Path, Path]
) -> None:
    spec = vtax.spec(
        f"""
        name: inv
        agents: [{{name: a1, vm: {VM[0]}}}]
        conditions: [{{name: base, baseline: true}}]
        workloads: [{{kind: noop, agents: [a1]}}]
        """
    )
    env_password = {"VTAX_VCENTER_PASSWORD": sim.password}  # as docs/how-to/vsphere.md recommends: not in `ps`

    def inventory(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VTAX, "inventory", str(spec), "--vcenter", sim.url, "--vcenter-user", sim.user, *flags],
            capture_output=True, text=True, env={**vtax.env, **env_password}, timeout=60, check=False,
        )  # fmt: skip

    untrusted = inventory()
    assert untrusted.returncode == 2, untrusted.stderr
    assert "TLS certificate not trusted" in untrusted.stderr and "--vcenter-ca-bundle" in untrusted.stderr
    assert len(untrusted.stderr.strip().splitlines()) == 1 and "Traceback" not in untrusted.stderr

    trusted = inventory("--vcenter-ca-bundle", str(certificate[0]))
    assert trusted.returncode == 0, trusted.stderr
    assert VM[0] in trusted.stdout

    insecure = inventory("--vcenter-insecure")
    assert insecure.returncode == 0 and "not verifying the TLS certificate" in insecure.stderr

    wrong = inventory("--vcenter-ca-bundle", str(certificate[0]), "--vcenter-password", "wrong")
    assert wrong.returncode == 2 and "login as 'user' refused" in wrong.stderr
    assert "wrong" not in wrong.stderr.replace("wrong user", "")  # the password is never printed

    down = vtax("inventory", str(spec), "--vcenter", "https://127.0.0.1:9/sdk", "--vcenter-user", "u",
                "--vcenter-password", "p")  # fmt: skip
    assert down.returncode == 3 and "unreachable" in down.stderr and "Traceback" not in down.stderr


def test_agents_map_by_bios_uuid_in_either_byte_order_and_zones_come_from_an_attribute(
    vtax: Vtax, sim: VcSim, certificate: tuple[Path, Path]
) -> None:
    with _vsphere(sim, certificate[0]) as vsphere:
        uuid = vsphere.inventory.vm_named(VM[1]).uuid
        for vm, zone in ((VM[0], "web"), (VM[1], "db")):
            action = VsphereAction(vsphere="set_attribute", vms=[vm], attribute="vtax.zone", value=zone)
            run_action(vsphere, action, stage="setup", condition="zones")
    smbios = swapped_uuid(uuid)  # what a guest with SMBIOS >= 2.6 reads from /sys/class/dmi/id/product_uuid
    spec = vtax.spec(
        f"""
        name: inv
        agents:
          - {{name: a1, vm: {VM[0]}}}
          - {{name: a2, vm: "{smbios}"}}
          - {{name: a3, vm: "{uuid}"}}
        conditions: [{{name: base, baseline: true}}]
        workloads: [{{kind: noop, agents: [a1]}}]
        vsphere:
          zones: {{from: attribute, attribute: vtax.zone}}
          appliances: {{name_pattern: "VM3$"}}
        """
    )
    done = vtax("inventory", str(spec), "--json", *_flags(sim, certificate), "--vcenter-password", sim.password)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    rows = {row["agent"]: row for row in found["agents"]}
    assert rows["a1"] == rows["a1"] | {"vm": VM[0], "found_by": "spec vm name", "host": HOST, "zone": "web"}
    assert rows["a2"] | {"vm": VM[1], "found_by": "uuid (byte-swapped)", "zone": "db"} == rows["a2"]
    assert rows["a3"]["vm"] == VM[1] and rows["a3"]["found_by"] == "uuid"
    assert rows["a1"]["cluster"] == "DC0_C0"
    assert [a["vm"] for a in found["appliances"]] == [VM[3]]

    missing = vtax.spec(spec.read_text().replace(f"vm: {VM[0]}", "vm: no-such-vm"), name="missing.yaml")
    done = vtax("inventory", str(missing), *_flags(sim, certificate), "--vcenter-password", sim.password)
    assert done.returncode == 2 and "no VM found for agent(s) a1 (no VM 'no-such-vm')" in done.stderr


def test_a_distributed_agent_is_found_by_the_bios_uuid_it_reports(
    vtax: Vtax, sim: VcSim, certificate: tuple[Path, Path], broker: RedisServer, agents: Agents
) -> None:
    with _vsphere(sim, certificate[0]) as vsphere:
        uuid = vsphere.inventory.vm_named(VM[2]).uuid
    agents.start("guest", broker, env={"VTAX_VM_UUID": swapped_uuid(uuid).upper()})  # as a new guest reads it
    done = vtax(
        "inventory", "--broker", broker.url, "--json", *_flags(sim, certificate), "--vcenter-password", sim.password
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["agents"]
    assert (row["agent"], row["vm"], row["found_by"], row["host"]) == ("guest", VM[2], "uuid (byte-swapped)", HOST)


def test_known_host_load_lands_in_the_right_trial_entity_and_unit(
    vtax: Vtax, sim: VcSim, certificate: tuple[Path, Path], influxd: TimeSeriesServer
) -> None:
    """Host CPU 10 % / 60 %, appliance CPU 5 % / 30 %, agent VMs ready 50 / 200 ms per 1 s sample: in the
    summary, the store, InfluxDB and the Grafana dashboard."""
    baseline = _set(
        sim,
        f"{HOST}:cpu.usage.average=1000",
        f"{HOST}:cpu.usage.average#0=1000",
        f"{HOST}:cpu.usage.average#1=1000",
        f"{VM[3]}:cpu.usage.average=500",
        f"{VM[0]}:cpu.ready.summation=50",
        f"{VM[1]}:cpu.ready.summation=50",
    )
    loaded = _set(
        sim,
        f"{HOST}:cpu.usage.average=6000",
        f"{HOST}:cpu.usage.average#0=2500",
        f"{HOST}:cpu.usage.average#1=9500",
        f"{VM[3]}:cpu.usage.average=3000",
        f"{VM[0]}:cpu.ready.summation=200",
        f"{VM[1]}:cpu.ready.summation=200",
    )
    spec = vtax.spec(
        f"""
        name: vsphere-load
        agents:
          - {{name: a1, vm: {VM[0]}}}
          - {{name: a2, vm: {VM[1]}}}
        conditions:
          - {{name: base, baseline: true, setup: "{baseline}"}}
          - {{name: sva, setup: "{loaded}"}}
        workloads:
          - {{kind: iperf3, topology: many-to-one, agents: [a1], server: a2}}
        timing: {{warmup: 1, steady: 3, cooldown: 0}}
        repetitions: 2
        vsphere:
          appliances: {{name_pattern: "VM3$"}}
        """
    )
    done, result = vtax.run_json(
        spec, *_flags(sim, certificate), "--vcenter-password", sim.password, "--influx", influxd.url
    )
    assert result is not None, done.stderr
    # the live view got vCenter's counters too: each trial's KPIs, announced again when they arrive after it
    shown = [line for line in done.stdout.splitlines() if re.search(r"sva #\d .*host\.cpu_pct 60\b", line)]
    assert len(shown) == 2, done.stdout
    metrics = result["metrics"]
    host_cpu = metrics["host.cpu_pct"]
    assert host_cpu["unit"] == "%"
    assert host_cpu["by_condition"]["base"]["mean"] == pytest.approx(10.0, abs=0.01)
    assert host_cpu["by_condition"]["sva"]["mean"] == pytest.approx(60.0, abs=0.01)
    assert host_cpu["by_condition"]["sva"]["n"] == 2
    assert metrics["appliance.cpu_pct"]["by_condition"]["base"]["mean"] == pytest.approx(5.0, abs=0.01)
    assert metrics["appliance.cpu_pct"]["by_condition"]["sva"]["mean"] == pytest.approx(30.0, abs=0.01)
    ready = metrics["vm.ready_pct"]
    assert ready["unit"] == "% per vCPU"
    assert ready["by_condition"]["base"]["mean"] == pytest.approx(5.0, abs=0.01)  # 50 ms of 1,000, one vCPU
    assert ready["by_condition"]["sva"]["mean"] == pytest.approx(20.0, abs=0.01)
    assert metrics["host.cpu_pct"]["overhead"]["sva"]["pct"] == pytest.approx(500.0, abs=0.5)
    busiest = metrics["host.cpu_max_core_pct"]["by_condition"]  # one of the host's two logical CPUs
    assert (busiest["base"]["mean"], busiest["sva"]["mean"]) == (pytest.approx(10.0), pytest.approx(95.0))
    for trial in result["trials"]:  # host CPU per Gbit/s of the agents' goodput, trial by trial
        kpis = trial["kpis"]
        assert kpis["host.cpu_per_gbps"] == pytest.approx(kpis["host.cpu_pct"] / kpis["iperf3.throughput_gbps"])
    mapped = {"vm": VM[0], "found_by": "spec vm name", "host": HOST, "cluster": "DC0_C0", "zone": None}
    assert result["vsphere"]["agents"]["a1"] == result["vsphere"]["agents"]["a1"] | mapped
    assert result["vsphere"]["appliances"] == [{"vm": VM[3], "host": HOST, "power": "poweredOn"}]

    store = Store(vtax.store)
    rows = store.vsphere_samples(result["run_id"])
    trials = {t["idx"]: t for t in store.trials(result["run_id"])}
    for row in rows:
        trial = trials[row["trial_idx"]]
        if (row["entity"], row["counter"], row["instance"]) == (HOST, "cpu.usage.average", ""):
            steady = trial["start_at"] + 1 <= row["t"] and row["t"] + row["dt"] <= trial["start_at"] + 4
            if steady:
                assert row["value"] == (60.0 if trial["condition"] == "sva" else 10.0)
                assert (row["raw"], row["unit"], row["role"]) == (row["value"] * 100, "%", "host")
    roles = {(r["entity"], r["role"]) for r in rows}
    assert {(HOST, "host"), (VM[0], "agent_vm"), (VM[1], "agent_vm"), (VM[3], "appliance")} <= roles
    assert not any(r["entity"] in (OTHER_HOST, VM[2]) for r in rows)  # only the agents' host and its appliance

    answered = dashboard_answers(influxd, result["run_id"])
    assert answered["vtax-live.json: vSphere: appliance VMs, agent VMs' ready time, busiest host core"]
    query = (
        'SELECT mean("appliance_cpu_pct") FROM "vtax_host" WHERE "run" = \'{}\' AND "phase" = \'steady\' '
        'GROUP BY "condition", "host"'
    )
    series = influxd.influxql(query.format(result["run_id"]))["results"][0]["series"]
    written = {(s["tags"]["condition"], s["tags"]["host"]): s["values"][0][1] for s in series}
    assert written == {("base", HOST): pytest.approx(5.0), ("sva", HOST): pytest.approx(30.0)}


def test_a_migration_mid_trial_flags_and_excludes_that_trial(
    vtax: Vtax, sim: VcSim, certificate: tuple[Path, Path]
) -> None:
    move = f"python {VCSIM_SCRIPT} {sim.control} --migrate {VM[0]}={OTHER_HOST}@1.5"
    spec = vtax.spec(
        f"""
        name: vsphere-drs
        agents: [{{name: a1, vm: {VM[0]}}}]
        conditions:
          - {{name: base, baseline: true}}
          - name: drs
            setup: "{move}"
            teardown: [{{vsphere: relocate, vms: [{VM[0]}], host: {HOST}}}]
        workloads: [{{kind: noop, agents: [a1]}}]
        timing: {{warmup: 0.5, steady: 2, cooldown: 0}}
        repetitions: 2
        """
    )
    done, result = vtax.run_json(spec, *_flags(sim, certificate), "--vcenter-password", sim.password)
    assert result is not None, done.stderr
    assert done.returncode == 1  # a validity error
    moved = [v for v in result["validity"] if v["code"] == "vm_migrated"]
    assert len(moved) == 2 and all(v["level"] == "error" for v in moved)
    assert f"agent vm {VM[0]} moved host: DRS migration {HOST} → {OTHER_HOST}" in moved[0]["message"]
    flagged = {v["trial"] for v in moved}
    conditions = {t["idx"]: t["condition"] for t in result["trials"]}
    assert {conditions[i] for i in flagged} == {"drs"}
    assert result["metrics"]["host.cpu_pct"]["by_condition"]["drs"]["n"] == 0  # excluded: on_migration exclude
    assert result["metrics"]["host.cpu_pct"]["by_condition"]["base"]["n"] == 2
    with _vsphere(sim, certificate[0]) as vsphere:  # the teardown action moved it back
        assert vsphere.inventory.host_of(vsphere.inventory.vm_named(VM[0])).name == HOST


def test_reads_batch_within_max_query_metrics_and_fall_back_to_historical_data() -> None:
    with VcSim(clusters=1, hosts=4, vms=10, refresh=1, max_query_metrics=30) as small, _insecure(small) as vsphere:
        reader = PerfReader(vcenter=vsphere.vcenter)
        assert reader.max_metrics == 30
        entities = [vm.ref for vm in vsphere.inventory.vms.values()] + [h.ref for h in vsphere.inventory.hosts.values()]
        now = time.time()
        samples = reader.read(entities, start=now - 5, end=now, interval=1)
        assert {s.entity for s in samples} == {e._moId for e in entities}  # 14 entities × 13 counters, 30 per call
        interval, why = reader.interval_for(entities[0], now - 2 * 3600)
        assert interval == HISTORICAL_INTERVAL_S and "aged out of vCenter's realtime retention" in why
        old = reader.read(entities[:2], start=now - 2 * 3600, end=now - 3700, interval=interval)
        assert old and all(s.dt == HISTORICAL_INTERVAL_S for s in old)


def test_a_trial_hands_over_before_vcenter_publishes_it_unless_its_load_would_leak(tmp_path: Path) -> None:
    """vCenter publishes a sample only after its interval. A trial whose cool-down covers the sample holding
    its steady phase's end hands over to the next at once, its counters read in the background and stored by
    the run's end; without a cool-down it waits until that sample is over, so the next trial's load cannot
    land in it."""
    with VcSim(clusters=1, hosts=1, vms=1, refresh=5) as sim, _insecure(sim) as vsphere:
        vsphere.map([{"name": "a1", "vm": "DC0_C0_RP0_VM0"}])
        store = Store(tmp_path / "vtax.db")
        time.sleep(5.2 - time.time() % 5)  # just after a sample: the one holding this moment ends in ~5 s

        received: list[dict[str, object]] = []

        def window(trial: int, start_at: float, seconds: float) -> TrialWindow:
            tags: TrialTags = {"run": "r", "trial": trial, "condition": "c", "repetition": 1}
            return TrialWindow(tags=tags, start_at=start_at, seconds=seconds)

        def record(trial: int) -> Callable[[list[HostSample]], None]:  # as the run loop stores a trial's record
            return lambda samples: store.add_host_samples("r", trial, samples)

        source = VsphereHostSource(vsphere=vsphere, store=store, cooldown_s=6)
        now = time.time()
        end = source.begin(window(0, now - 9, 9), on_sample=received.append, on_record=record(0))
        handing_over = time.time()
        end()
        assert store.host_samples("r") == []
        assert time.time() - handing_over < 1.5  # not the ~4.8 s until vCenter has the window's last sample
        assert store.vsphere_trials("r") == set()
        source.finish()
        assert store.vsphere_trials("r") == {0}
        stored = store.host_samples("r")
        assert stored and max(s["t"] + s["dt"] for s in stored) >= now  # up to the window's end
        assert len(received) == len(stored)  # the live display and InfluxDB got them too

        source = VsphereHostSource(vsphere=vsphere, store=store, cooldown_s=0)
        now = time.time()
        end = source.begin(window(1, now - 3, 3), on_sample=received.append, on_record=record(1))
        end()
        assert time.time() >= (now // 5 + 1) * 5  # the sample holding the steady phase's end is over
        source.finish()
        assert store.vsphere_trials("r") == {0, 1}
        assert not store.flags("r")

        now = time.time()  # interrupted (Ctrl-C): no waiting for vCenter; the trial says what it lacks
        end = source.begin(window(2, now - 9, 9), on_sample=received.append, on_record=record(2))
        end()
        stopping = time.time()
        source.finish(abandon=True)
        assert time.time() - stopping < 1.0
        assert store.vsphere_trials("r") == {0, 1}
        [flag] = store.flags("r")
        assert (flag["trial_idx"], flag["kind"]) == (2, "vsphere_missing") and "vtax collect" in flag["message"]


class _insecure(_vsphere):
    def __init__(self, server: VcSim) -> None:
        config = VcenterConfig(url=server.url, user=server.user, password=server.password, insecure=True)
        self.vsphere = Vsphere(vcenter=Vcenter(config=config), spec=VsphereSpec())


def test_summation_counters_become_percent_and_rates() -> None:
    from controller.vsphere.perf import Counter

    ready = Counter(key=1, name="cpu.ready.summation", unit="millisecond", rollup="summation")
    assert convert(ready, 1000, 20) == (5.0, "%")  # 1,000 ms waiting in a 20 s sample
    packets = Counter(key=2, name="net.droppedRx.summation", unit="number", rollup="summation")
    assert convert(packets, 400, 20) == (20.0, "1/s")
    usage = Counter(key=3, name="cpu.usage.average", unit="percent", rollup="average")
    assert convert(usage, 4250, 20) == (42.5, "%")
    received = Counter(key=4, name="net.received.average", unit="kiloBytesPerSecond", rollup="average")
    assert convert(received, 125000, 20)[0] == pytest.approx(1024.0)


def test_a_500_vm_inventory_maps_and_finds_appliances_per_host(vtax: Vtax) -> None:
    with VcSim(clusters=5, hosts=4, vms=100) as big:
        spec = vtax.spec(
            """
            name: big
            agents:
              - {name: DC0_C0_RP0_VM7}
              - {name: a2, vm: DC0_C3_RP0_VM42}
            conditions: [{name: base, baseline: true}]
            workloads: [{kind: noop, agents: [DC0_C0_RP0_VM7]}]
            vsphere: {appliances: {name_pattern: "VM9[0-9]$"}}
            """
        )
        done = vtax("inventory", str(spec), "--json", "--vcenter", big.url, "--vcenter-user", big.user,
                    "--vcenter-password", big.password, "--vcenter-insecure")  # fmt: skip
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)
        assert found["server"].startswith("VMware vCenter Server")
        rows = {row["agent"]: row for row in found["agents"]}
        assert rows["DC0_C0_RP0_VM7"]["found_by"] == "name" and rows["a2"]["vm"] == "DC0_C3_RP0_VM42"
        hosts = {rows["DC0_C0_RP0_VM7"]["host"], rows["a2"]["host"]}
        assert found["appliances"] and {a["host"] for a in found["appliances"]} <= hosts
        assert all(a["vm"][-2] == "9" for a in found["appliances"])
        with _insecure(big) as vsphere:
            assert len(vsphere.inventory.vms) == 500
            assert len(vsphere.inventory.appliances(ApplianceSelector(name_pattern="VM9[0-9]$"))) == 50


def test_vcenter_gone_mid_run_costs_those_trials_their_counters_not_the_run(vtax: Vtax) -> None:
    spec = vtax.spec(
        """
        name: vsphere-gone
        agents: [{name: a1, vm: DC0_C0_RP0_VM0}]
        conditions:
          - {name: base, baseline: true}
          - {name: later}
        workloads: [{kind: cpu, agents: [a1], params: {percent: 20}}]
        timing: {warmup: 0.5, steady: 2, cooldown: 0}
        repetitions: 1
        order: blocked
        """
    )
    with VcSim(clusters=1, hosts=1, vms=1, refresh=1) as gone:
        # trial 0's counters are read in the background just after it: give that 2 s, then vCenter goes
        kill = f"sleep 2; kill {gone.proc.pid}" if gone.proc else "false"
        spec.write_text(spec.read_text().replace("- {name: later}", f'- {{name: later, setup: "{kill}"}}'))
        done, result = vtax.run_json(spec, "--vcenter", gone.url, "--vcenter-user", gone.user, "--vcenter-password",
                                     gone.password, "--vcenter-insecure")  # fmt: skip
    assert result is not None, done.stderr
    assert [t["status"] for t in result["trials"]] == ["ok", "ok"]
    missing = [v for v in result["validity"] if v["code"] == "vsphere_missing"]
    assert [v["trial"] for v in missing] == [1] and "vCenter counters not read" in missing[0]["message"]
    assert result["metrics"]["host.cpu_pct"]["by_condition"]["base"]["n"] == 1
    assert result["metrics"]["cpu.achieved_pct"]["by_condition"]["later"]["n"] == 1  # the load was still measured

    with VcSim(clusters=1, hosts=1, vms=1, refresh=1) as back:  # vCenter is back: read what it missed
        done = vtax("collect", result["run_id"], "--vcenter", back.url, "--vcenter-user", back.user,
                    "--vcenter-password", back.password, "--vcenter-insecure")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "vCenter counters read for 1 trial(s): 1" in done.stdout
    done = vtax("show", result["run_id"], "--json", str(vtax.workdir / "again.json"))
    again = json.loads((vtax.workdir / "again.json").read_text())
    assert not [v for v in again["validity"] if v["code"] == "vsphere_missing"]
    assert again["metrics"]["host.cpu_pct"]["by_condition"]["later"]["n"] == 1


def test_a_lost_vcenter_session_is_logged_in_again(vtax: Vtax) -> None:
    """A soak test outlives vCenter sessions (restarts, idle timeouts): vtax logs in again and loses nothing."""
    with VcSim(clusters=1, hosts=1, vms=1, refresh=1) as sim:
        drop = f"python {VCSIM_SCRIPT} {sim.control} --drop-sessions --login {sim.user}:{sim.password}"
        spec = vtax.spec(
            f"""
            name: vsphere-relogin
            agents: [{{name: a1, vm: DC0_C0_RP0_VM0}}]
            conditions:
              - {{name: base, baseline: true}}
              - {{name: later, setup: "{drop}"}}
            workloads: [{{kind: cpu, agents: [a1], params: {{percent: 20}}}}]
            timing: {{warmup: 0.5, steady: 2, cooldown: 0}}
            repetitions: 1
            order: blocked
            """
        )
        done, result = vtax.run_json(spec, "--vcenter", sim.url, "--vcenter-user", sim.user, "--vcenter-password",
                                     sim.password, "--vcenter-insecure")  # fmt: skip
    assert result is not None, done.stderr
    assert not [v for v in result["validity"] if v["code"] == "vsphere_missing"], result["validity"]
    assert result["metrics"]["host.cpu_pct"]["by_condition"]["later"]["n"] == 1
    assert "session lost; logging in again" in done.stderr
