"""vSphere in a run: agents mapped to VMs, hosts and zones; hypervisor counters for every trial window;
VMs that moved host during a trial flagged.

The counters of the hosts running agents, the agents' VMs and the appliance VMs on those hosts are read
after each trial, in the background while the next ones run (vCenter publishes a realtime sample only after
its 20 s interval ends), converted, stored raw, and summarised per host and sample as host samples the
analysis aligns to the steady phase.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim, vmodl

from agent.wire import HostSample, TrialTags
from controller.errors import InputError
from controller.hostsources import HostCounterSource, RecordHandler, SampleHandler, TrialWindow, WindowEnd
from controller.metrics import HOST_METRICS
from controller.store import Store
from controller.vsphere.audit import host_clusters, migrations, placements, watch_policy
from controller.vsphere.connection import VcenterError, describe_fault
from controller.vsphere.inventory import migration_events
from controller.vsphere.metrics import HOST_MAXIMA, summaries
from controller.vsphere.perf import PerfSample
from controller.vsphere.session import Vsphere
from controller.zones import migrations_that_mixed
from workloads.base import combine

log = logging.getLogger("vtax.vsphere")


_FAULTS = (VcenterError, vmodl.MethodFault, OSError)  # what vCenter going away or refusing looks like


_Handlers = tuple[SampleHandler, RecordHandler]  # a trial's live view and record
_Opening = tuple[TrialTags, "Future[_Window]", _Handlers | None]  # a begun window: its tags, placement, handlers


STOPPED_EARLY = "the run stopped before vCenter published this trial's counters; `vtax collect RUN` reads them"


class _RunStopped(Exception):
    """The run was interrupted while a trial's counters were still awaited."""


@dataclass
class _Window:
    trial_idx: int
    run_id: str
    start_at: float
    end: float
    hosts: dict[str, str | None]  # VM moid → host moid at the start
    roles: dict[str, str]  # moid → host / agent_vm / appliance
    interval: int  # the sample length to read it at (0: nothing to read)
    why: str | None  # why that is not realtime, if it is not
    offset_s: float  # vCenter's clock minus ours

    def sample_end(self, t: float) -> float:
        """When vCenter's sample holding moment `t` (our clock) ends; its samples end on multiples of it."""
        if not self.interval:
            return t
        return ((t + self.offset_s) // self.interval + 1) * self.interval - self.offset_s


class VsphereHostSource(HostCounterSource):
    """Host counters from vCenter for each trial window (a HostCounterSource).

    vCenter publishes a sample only after its interval (20 s) is over, so a trial's counters are read in the
    background once that sample is out, while the next trials run, and stored with the trial; `finish` waits
    for the last of them. A trial ends only once the sample holding its steady phase's end is over, so that
    the next trial's load never lands in it (with a cool-down of 20 s or more, it already is). Where each VM
    runs is checked then, before a teardown hook may move it.
    """

    def __init__(
        self, *, vsphere: Vsphere, store: Store, cooldown_s: float = 0.0, max_wait_s: float | None = None
    ) -> None:
        self.vsphere = vsphere
        self.store = store
        self.cooldown_s = cooldown_s
        self.max_wait_s = max_wait_s
        self._placements = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vsphere-placement")
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vsphere-counters")
        self._pending: list[Future[list[HostSample]]] = []
        self._stopping = threading.Event()

    def begin(self, window: TrialWindow, *, on_sample: SampleHandler, on_record: RecordHandler) -> WindowEnd:
        """Note where every watched VM runs now, in the background: vCenter's answer must not delay the load.
        The window's end checks for migrations and leaves the counters to the background reader."""
        opening = self._open_window(window, (on_sample, on_record))
        return lambda: self._end(opening)

    def _open_window(self, window: TrialWindow, handlers: _Handlers | None) -> _Opening:
        return window.tags, self._placements.submit(self.vsphere.vcenter.retry, self._open, window), handlers

    def _flag(self, run_id: str, trial_idx: int, kind: str, message: str, *, severity: str = "warning") -> None:
        log.warning("trial %d: %s", trial_idx, message)
        self.store.add_flag(run_id, trial_idx, kind=kind, severity=severity, message=message)

    def _open(self, window: TrialWindow) -> _Window:
        vms = self.vsphere.agent_vms()
        hosts = self.vsphere.inventory.current_hosts(vms)
        appliances = self.vsphere.appliance_vms({h for h in hosts.values() if h})
        hosts |= self.vsphere.inventory.current_hosts(appliances)
        roles = {vm.moid: "agent_vm" for vm in vms} | {vm.moid: "appliance" for vm in appliances}
        roles |= {host: "host" for host in set(hosts.values()) if host}
        entities = self._entities(roles)
        interval, why = self.vsphere.reader.interval_for(entities[0], window.start_at) if entities else (0, None)
        return _Window(
            trial_idx=window.tags["trial"],
            run_id=window.tags["run"],
            start_at=window.start_at,
            end=window.end,
            hosts=hosts,
            roles=roles,
            interval=interval,
            why=why,
            offset_s=self.vsphere.reader.offset_s,
        )

    def _end(self, opening: _Opening) -> None:
        """Check for migrations now and leave the counters to the background reader, which hands them to the
        trial's record when vCenter has published them. A vCenter failure costs this trial its counters,
        flagged, not the run."""
        window, handlers = self._opened(opening)
        if window is not None:
            self._pending.append(self._reads.submit(self._collect, window, handlers))

    def _opened(self, opening: _Opening) -> tuple[_Window | None, _Handlers | None]:
        """A begun window, once vCenter's sample holding its steady phase's end is over, its migrations
        checked; None when vCenter could not be asked."""
        tags, placing, handlers = opening
        try:
            window = placing.result()
            self._sleep_until(window.sample_end(window.end - self.cooldown_s))
            self.vsphere.vcenter.retry(self._check_migrations, window)
        except _RunStopped:
            self._flag(tags["run"], tags["trial"], "vsphere_missing", STOPPED_EARLY)
            return None, None
        except _FAULTS as exc:
            self._flag(
                tags["run"], tags["trial"], "vsphere_missing", f"vCenter counters not read: {describe_fault(exc)}"
            )
            return None, None
        return window, handlers

    def finish(self, *, abandon: bool = False) -> None:
        """Wait for the counters of the trials still being read; with `abandon` (the run was interrupted) stop
        waiting for vCenter and flag those trials, which `vtax collect` can fill in later."""
        if abandon:
            self._stopping.set()
        for reading in self._pending:
            reading.result()
        self._pending = []

    def collect_window(self, window: TrialWindow) -> list[HostSample]:
        """A past window read on its own, its raw counters stored, with the VMs where they are now
        (`vtax collect`); returns its host samples."""
        opened, _ = self._opened(self._open_window(window, None))
        return [] if opened is None else self._collect(opened, None)

    def _collect(self, window: _Window, handlers: _Handlers | None) -> list[HostSample]:
        """Read and convert one window's counters: raw ones stored here, per-host samples to the record."""
        try:
            samples = self.vsphere.vcenter.retry(self._read, window)
        except _RunStopped:
            self._flag(window.run_id, window.trial_idx, "vsphere_missing", STOPPED_EARLY)
            return []
        except _FAULTS as exc:
            self._flag(
                window.run_id, window.trial_idx, "vsphere_missing", f"vCenter counters not read: {describe_fault(exc)}"
            )
            return []
        self._store(window, samples)
        host_samples = self._host_samples(window, samples)
        if handlers is not None:
            on_sample, on_record = handlers
            on_record(host_samples)
            for sample in host_samples:
                on_sample(sample)
        return host_samples

    def _entities(self, roles: dict[str, str]) -> list[Any]:
        inventory = self.vsphere.inventory
        refs = []
        for moid, role in roles.items():
            found = inventory.hosts.get(moid) if role == "host" else inventory.vms.get(moid)
            if found is not None:
                refs.append(found.ref)
        return refs

    def _sleep_until(self, moment: float) -> None:
        """Wait, unless the run is stopped meanwhile."""
        if self._stopping.wait(max(0.0, moment - time.time())):
            raise _RunStopped

    def _read(self, window: _Window) -> list[PerfSample]:
        """Wait until the sample holding the window's end is published, then read the whole window."""
        entities = self._entities(window.roles)
        if not entities:
            return []
        reader, interval = self.vsphere.reader, window.interval
        if window.why is not None:
            self._flag(window.run_id, window.trial_idx, "vsphere_resolution", f"vCenter counters: {window.why}")
        max_wait = self.max_wait_s if self.max_wait_s is not None else 2 * interval + 10
        last_end = window.sample_end(window.end)
        give_up = time.time() + max(0.0, last_end - time.time()) + max_wait
        while True:
            self._sleep_until(last_end + 0.5)
            samples = reader.read(entities, start=window.start_at, end=last_end + 0.5, interval=interval)
            newest = max((s.t for s in samples), default=0.0)
            if newest >= last_end - 0.5 or time.time() >= give_up:
                break
            self._sleep_until(time.time() + min(interval / 2, 5.0))
        if newest < last_end - 0.5:
            self._flag(
                window.run_id,
                window.trial_idx,
                "vsphere_missing",
                f"vCenter had not published the samples up to the trial's end after {max_wait:g} s",
            )
        return samples

    def _store(self, window: _Window, samples: list[PerfSample]) -> None:
        inventory = self.vsphere.inventory
        rows = []
        for s in samples:
            role = window.roles.get(s.entity, "")
            if role == "host":
                name, host = inventory.hosts[s.entity].name, inventory.hosts[s.entity].name
            else:
                vm_host = window.hosts.get(s.entity)
                name = inventory.vms[s.entity].name
                host = inventory.hosts[vm_host].name if vm_host in inventory.hosts else None
            rows.append(vars(s) | {"role": role, "entity": name, "moid": s.entity, "host": host, "t": s.t - s.dt})
        self.store.add_vsphere_samples(window.run_id, window.trial_idx, rows)

    def _host_samples(self, window: _Window, samples: list[PerfSample]) -> list[HostSample]:
        """Per ESXi host and sample interval: the host's counters and its agent and appliance VMs' summaries."""
        inventory = self.vsphere.inventory
        values: dict[tuple[str, float, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for s in samples:
            role = window.roles.get(s.entity)
            host = s.entity if role == "host" else window.hosts.get(s.entity)
            if host is None or role is None:
                continue
            per_vcpu = s.value / inventory.vms[s.entity].num_cpu if role != "host" else s.value
            for name, value in summaries(role, s.counter, s.instance, s.value, per_vcpu):
                values[(host, s.t - s.dt, s.dt)][name].append(value)
        result = []
        for (host, t, dt), named in sorted(values.items(), key=lambda item: item[0][1]):
            combined = {
                name: max(found) if name in HOST_MAXIMA else combine(HOST_METRICS.get(name), found)
                for name, found in named.items()
            }
            result.append({"host": inventory.hosts[host].name, "t": t, "dt": dt, "values": combined})
        return result

    def _check_migrations(self, window: _Window) -> None:
        """Flag the trial when an agent or appliance VM changed host: by its events, and by runtime.host."""
        inventory = self.vsphere.inventory
        watched = {moid: inventory.vms[moid] for moid, role in window.roles.items() if role != "host"}
        moved: dict[str, str] = {}
        begin = datetime.fromtimestamp(window.start_at + self.vsphere.reader.offset_s, UTC)
        end = datetime.fromtimestamp(window.end + self.vsphere.reader.offset_s, UTC)
        events = migration_events(self.vsphere.vcenter, begin, end)
        for event in events:
            vm = event.vm.vm._moId if event.vm is not None else None
            if vm in watched:
                kind = "DRS migration" if isinstance(event, vim.event.DrsVmMigratedEvent) else "migration"
                source = getattr(getattr(event, "sourceHost", None), "name", "?")
                target = event.host.name if event.host is not None else "?"
                moved[vm] = f"{kind} {source} → {target} at {event.createdTime:%H:%M:%S}"
        now = inventory.current_hosts(list(watched.values()))
        for moid, host in now.items():
            if moid not in moved and host != window.hosts.get(moid):
                before = inventory.hosts.get(window.hosts.get(moid) or "")
                after = inventory.hosts.get(host or "")
                moved[moid] = (
                    f"on {before.name if before else '?'} at the start, {after.name if after else '?'} at the end"
                )
        for moid, how in moved.items():
            message = f"{window.roles[moid].replace('_', ' ')} {watched[moid].name} moved host: {how}"
            self._flag(window.run_id, window.trial_idx, "vm_migrated", message, severity="error")
        if self.vsphere.spec.watch_zones is not None and events:
            self._check_zones(window, events)

    def _check_zones(self, window: _Window, events: list[Any]) -> None:
        """Flag the trial when one of its migrations, of any VM, put VMs of two zones on one host."""
        policy = watch_policy(self.vsphere.spec)
        inventory = self.vsphere.inventory
        now = inventory.current_hosts(list(inventory.vms.values()))
        mixed = migrations_that_mixed(
            placements(inventory, policy.zones, now), migrations(events), host_clusters(inventory), policy
        )
        for finding in mixed:
            if not finding["allowed"]:
                self._flag(window.run_id, window.trial_idx, "zones_mixed", finding["message"])


def collect_missing(*, vsphere: Vsphere, store: Store, run_id: str, seconds: float) -> list[int]:
    """Read vCenter's counters for the trials of a stored run that have none (vCenter was unreachable then):
    realtime data within the hour, else 300 s historical samples (flagged). Returns the trials filled in.

    Only for runs made with --vcenter: another run's host counters are another machine's and must not mix.
    """
    note = store.notes(run_id).get("vsphere")
    if note is None:
        raise InputError(f"run {run_id} was not made with --vcenter; its host counters come from elsewhere")
    vsphere.map([{"name": name, "vm": placed["vm"]} for name, placed in note["agents"].items()])
    have = store.vsphere_trials(run_id)
    source = VsphereHostSource(vsphere=vsphere, store=store, max_wait_s=0)
    filled = []
    for trial in store.trials(run_id):
        if trial["start_at"] is None or trial["idx"] in have:
            continue
        store.clear_flags(run_id, trial["idx"], kind="vsphere_missing")
        tags: TrialTags = {
            "run": run_id,
            "trial": trial["idx"],
            "condition": trial["condition"],
            "repetition": trial["repetition"],
        }
        samples = source.collect_window(TrialWindow(tags=tags, start_at=trial["start_at"], seconds=seconds))
        if samples:
            store.add_host_samples(run_id, trial["idx"], samples)
            filled.append(trial["idx"])
    return filled
