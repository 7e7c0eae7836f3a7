"""The soak's machinery, for a minute: `python -m bench.bench_soak --quick --minutes 1`.

Adversaries: a noisy liar (`--fault noise`), a silent node (`--fault silent`) and a kill -9
of a random serving process half-way in, restarted on the same port and key, while 4 askers
ask in a loop through the one join path. Every ask must end answered or refused with a
reason (none hangs or fails without one), and every answer must be the local greedy one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.net
@pytest.mark.timeout(900)
def test_a_minute_of_soak_answers_right_or_refuses_with_a_reason(smollm_path, tmp_path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_soak", "--quick", "--minutes", "1", "--seed", "3",
         "--model", str(smollm_path), "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=840, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    report = proc.stdout
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    # The report's shape: the outcome table with its targets, then RSS by minute per process.
    for row in ("| answers attempted |", "| answered or refused with a reason |",
                "| correct (= local greedy) |", "| verified |", "| kills (victim"):
        assert row in report
    assert "100 % of answered |" in report and "| process (peak RSS MB) | min 1 |" in report
    for role in ("sentinel", "honest", "liar", "silent", "askers"):
        assert f"| {role} " in report
        assert len(doc["rss_mb"][role]) == doc["minutes"] and doc["rss_mb"][role][0] > 0
    # Every ask ended with an answer or a stated reason; every answer was the local one.
    refused = sum(doc["refused"].values())
    assert doc["attempted"] == doc["answered"] + refused + len(doc["hung"]) + len(doc["failed"])
    assert doc["hung"] == [] and doc["failed"] == []
    assert doc["answered"] >= 4 and doc["correct"] == doc["answered"] and doc["wrong"] == []
    assert len(doc["kills"]) >= 1 and sum(doc["restarts"].values()) >= 1
