"""The zone audit's verdicts on hand-made inventories with known answers (as Shaker tests its SLA logic): which
hosts join zones, which of those pass no appliance, which cluster rules let zones meet, which migrations did,
and what a policy allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import InputError
from controller.spec import Allowance
from controller.zones import (
    Cluster,
    HostRule,
    Migration,
    Vm,
    ZonePolicy,
    audit,
    co_residency,
    load_policy,
    migrations_that_mixed,
    rule_exposure,
)

HOSTS = {"h1": "c1", "h2": "c1", "h3": "c1", "h4": None}
PLACED = [
    Vm("web1", "h1", "web"),
    Vm("web2", "h2", "web"),
    Vm("db1", "h1", "db"),  # h1: web and db
    Vm("db2", "h3", "db"),
    Vm("sva-h1", "h1", None),  # the appliance of h1
    Vm("scratch", "h2", None),  # no zone: never a finding
    Vm("dmz1", "h4", "dmz"),
    Vm("web-off", "h4", "web", powered_on=False),  # a powered-off VM shares nothing
]


def kinds(findings: list[dict]) -> list[tuple[str, str | None, list[str]]]:
    return [(f["kind"], f["host"] or f["cluster"], f["zones"]) for f in findings]


def test_a_host_with_two_zones_is_found_and_one_without_an_appliance_too() -> None:
    found = co_residency(PLACED, HOSTS, appliances={"sva-h1"}, policy=ZonePolicy())
    assert kinds(found) == [("co_resident", "h1", ["db", "web"])]
    assert found[0]["vms"] == {"web": ["web1"], "db": ["db1"]} and not found[0]["allowed"]
    moved = [Vm("dmz1", "h2", "dmz"), *[vm for vm in PLACED if vm.name != "dmz1"]]
    found = co_residency(moved, HOSTS, appliances={"sva-h1"}, policy=ZonePolicy())
    assert kinds(found) == [
        ("co_resident", "h1", ["db", "web"]),
        ("co_resident", "h2", ["dmz", "web"]),
        ("no_appliance", "h2", ["dmz", "web"]),
    ]


def test_a_policy_allows_zones_on_the_hosts_it_names_and_a_missing_appliance_only_when_told() -> None:
    policy = ZonePolicy(allow=[Allowance(zones=["web", "db", "app"], hosts="h1", why="one tier, one appliance")])
    [found] = co_residency(PLACED, HOSTS, appliances={"sva-h1"}, policy=policy)
    assert found["allowed"] and found["why"] == "one tier, one appliance"
    elsewhere = ZonePolicy(allow=[Allowance(zones=["web", "db"], hosts="h9*")])
    assert not co_residency(PLACED, HOSTS, appliances={"sva-h1"}, policy=elsewhere)[0]["allowed"]
    no_sva = co_residency(PLACED, HOSTS, appliances=set(), policy=policy)
    assert [(f["kind"], f["allowed"]) for f in no_sva] == [("co_resident", True), ("no_appliance", False)]
    unnamed = co_residency(PLACED, HOSTS, appliances=None, policy=policy)  # the policy names no appliance VMs
    assert [f["kind"] for f in unnamed] == ["co_resident"]
    relaxed = policy.model_copy(update={"require_appliance": False})
    assert all(f["allowed"] for f in co_residency(PLACED, HOSTS, appliances=set(), policy=relaxed))


def test_mandatory_vm_host_rules_that_keep_zones_apart_leave_nothing_to_find() -> None:
    cluster_hosts = frozenset({"h1", "h2", "h3"})
    vms = [Vm("web1", "h1", "web"), Vm("web2", "h1", "web"), Vm("db1", "h3", "db")]
    apart = Cluster(
        "c1",
        cluster_hosts,
        drs_enabled=True,
        rules=(
            HostRule("web-on-h1h2", frozenset({"web1", "web2"}), frozenset({"h1", "h2"}), affine=True, mandatory=True),
            HostRule("db-off-h1h2", frozenset({"db1"}), frozenset({"h1", "h2"}), affine=False, mandatory=True),
        ),
    )
    assert rule_exposure(vms, [apart], ZonePolicy()) == []
    should = Cluster(
        "c1", cluster_hosts, True, tuple(HostRule(**{**r.__dict__, "mandatory": False}) for r in apart.rules)
    )
    [found] = rule_exposure(vms, [should], ZonePolicy())  # DRS may break should-rules
    assert found["kind"] == "drs_may_mix" and found["zones"] == ["db", "web"] and "3 host(s)" in found["message"]
    unbound = Cluster("c1", cluster_hosts, False, apart.rules[:1])  # db1 in no rule: it may go anywhere
    [found] = rule_exposure(vms, [unbound], ZonePolicy())
    assert "db1" in found["message"] and "DRS is off" in found["message"] and "2 host(s)" in found["message"]
    allowed = ZonePolicy(allow=[Allowance(zones=["db", "web"])])
    assert rule_exposure(vms, [should], allowed)[0]["allowed"]


def test_migrations_are_replayed_from_now_backwards_and_the_one_that_joined_zones_is_found() -> None:
    now = [Vm("web1", "h2", "web"), Vm("db1", "h1", "db"), Vm("app1", "h1", "app")]
    moves = [  # web1 went h3 → h1 (joins db there), then h1 → h2 (alone again); app1 came to h1 last
        Migration("2026-12-01T10:00:00+00:00", "web1", "h3", "h1", by_drs=True),
        Migration("2026-12-01T11:00:00+00:00", "web1", "h1", "h2", by_drs=False),
        Migration("2026-12-01T12:00:00+00:00", "app1", "h3", "h1", by_drs=True),
    ]
    found = migrations_that_mixed(now, moves, HOSTS, ZonePolicy())
    assert [(f["time"][11:16], f["host"], f["zones"]) for f in found] == [
        ("10:00", "h1", ["db", "web"]),
        ("12:00", "h1", ["app", "db"]),
    ]
    assert found[0]["message"].startswith("DRS moved web1 (zone web) from h3 to h1, which then ran zone(s) db")
    assert migrations_that_mixed(now, moves[1:2], HOSTS, ZonePolicy()) == []  # leaving a host joins nothing


def test_the_audit_counts_violations_only() -> None:
    policy = ZonePolicy(allow=[Allowance(zones=["web", "db"], hosts="h1")])
    result = audit(
        PLACED, host_clusters=HOSTS, appliances={"sva-h1"}, clusters=[], migrations=[], policy=policy, days=7
    )
    assert (result["zoned_vms"], result["zones"], result["violations"]) == (6, ["db", "dmz", "web"], 0)
    strict = audit(
        PLACED, host_clusters=HOSTS, appliances=set(), clusters=[], migrations=[], policy=ZonePolicy(), days=7
    )
    assert strict["violations"] == 2  # co-resident on h1, and no appliance there


def test_a_bad_policy_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("allow:\n  - zones: [web]\n")
    with pytest.raises(InputError, match=r"policy.yaml: allow.0.zones: List should have at least 2 items"):
        load_policy(path)
    path.write_text("zones: {from: tags}\n")
    with pytest.raises(InputError, match=r"policy.yaml: zones.from: "):
        load_policy(path)
    assert load_policy(None).zones.attribute == "vtax.zone"
