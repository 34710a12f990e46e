"""The run store opens stores made by older versions of vtax."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from controller.store import Store


def test_a_store_from_before_start_skew_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE agent_results (run_id TEXT NOT NULL, trial_idx INTEGER NOT NULL, agent TEXT NOT NULL,"
        " workload TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, started_at REAL, ended_at REAL,"
        " agent_cpu_s REAL, summary_json TEXT)"
    )
    db.execute("INSERT INTO agent_results VALUES ('r1', 0, 'a', 'w', 'ok', '', 1.0, 2.0, 0.1, '{}')")
    db.commit()
    db.close()
    store = Store(path)
    store.add_agent_result(
        "r2", 0, {"agent": "a", "workload": "w", "status": "ok", "reason": "", "start_skew_s": 0.002}
    )
    rows = {r["run_id"]: r for r in [*store.agent_results("r1"), *store.agent_results("r2")]}
    assert rows["r1"]["start_skew_s"] is None and rows["r1"]["agent_cpu_s"] == 0.1
    assert rows["r2"]["start_skew_s"] == 0.002
