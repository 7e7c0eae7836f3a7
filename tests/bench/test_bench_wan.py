"""The WAN bench's arithmetic and its opt-in hop timing: floors from the RTT matrix, routes named
by country, per-part totals summed over processes, and a hook that costs nothing when off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hive_core.base import hoptiming
from hive_core.sim import load_country_rtt
from hive_core.sim.shaped import pair_rtt_ms

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the bench package lives beside hive_core, not installed

from bench.bench_wan import SCENARIOS, floors_ms, route_countries, targets
from bench.wan_hive import spans
from bench.wan_hop import timing_totals

PROBE = r"""
import json, sys
from hive_core.base import hoptiming
from hive_core.base.identity import Identity, verify
from hive_core.base.codec import decode, encode
from hive_core.protocol.inference import ShardQuery
from hive_core.trust.merkle import merkle_root
from hive_core.trust.seal import box_between, open_sealed, seal
me, peer = Identity.generate(), Identity.generate()
box = box_between(me, peer.public_key)
for _ in range(3):
    sig = me.sign(b"m"); verify(me.public_key, b"m", sig)
    open_sealed(box, seal(box, b"x" * 2304, b"ctx"), b"ctx")
    merkle_root(b"y" * 5000)
    decode(encode(ShardQuery(7)))
print(json.dumps({"on": hoptiming.enabled(), "parts": hoptiming.snapshot()}))
"""


def run_probe(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          check=False, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_hop_timing_counts_each_part_and_writes_it_at_exit(tmp_path: Path) -> None:
    out = tmp_path / "timing"
    got = run_probe({**os.environ, hoptiming.ENV: str(out)})
    parts = got["parts"]
    assert got["on"] is True and isinstance(parts, dict)
    assert {p: parts[p][0] for p in hoptiming.PARTS} == {
        "signing": 6, "sealing": 6, "hashing": 3, "framing": 6}
    assert all(parts[p][1] > 0 for p in hoptiming.PARTS)
    (dump,) = out.iterdir()
    assert dump.name.endswith(".json") and json.loads(dump.read_text()) == parts
    # The bench adds up every process's file.
    (out / "2.json").write_text(json.dumps({"sealing": [4, 0.5]}))
    total = timing_totals(str(out))
    assert total["sealing"] == (10, pytest.approx(parts["sealing"][1] + 0.5))


def test_hop_timing_is_off_by_default_and_then_free() -> None:
    env = {k: v for k, v in os.environ.items() if k != hoptiming.ENV}
    got = run_probe(env)
    assert got == {"on": False, "parts": {}}
    if not hoptiming.enabled():  # this test process: the decorator hands the function back
        def f() -> int:
            return 1

        assert hoptiming.timed("framing")(f) is f
    with pytest.raises(ValueError, match="unknown hop part 'wire'"):
        hoptiming.timed("wire")


def test_floors_count_the_hops_a_token_crosses() -> None:
    data = load_country_rtt()
    es_de, es_nz, de_nz = (pair_rtt_ms(data, a, b) for a, b in
                           (("ES", "DE"), ("ES", "NZ"), ("DE", "NZ")))
    star, cascade = floors_ms("ES", ["DE", "NZ"], data, 10.0)
    assert star == pytest.approx(es_de + es_nz + 10.0)  # out and back to each stage
    assert cascade == pytest.approx((es_de + de_nz + es_nz) / 2 + 10.0)  # around once
    assert cascade < star


def test_routes_are_named_by_country_and_spans_cover_the_model() -> None:
    answer = {"route": [{"nodes": ["aa", "bb"]}, {"nodes": ["cc"]}]}
    assert route_countries(answer, {"aa": "ES", "cc": "NZ"}) == ["ES", "NZ"]
    assert route_countries({"route": [{"nodes": ["dd"]}]}, {}) == ["?"]
    assert spans(4) == [(0, 8), (8, 16), (16, 23), (23, 30)]


def test_targets_name_the_best_cascade_and_any_answer_lost() -> None:
    four, lossy = SCENARIOS[2].name, SCENARIOS[4].name
    results: dict[str, dict[str, Any]] = {
        four: {"star": {"tokens_per_s": 2.0}, "cascade": {"tokens_per_s": 3.0},
               "cascade, fp16 wire": {"tokens_per_s": 3.5}},
        lossy: {"star": {"new_ids": [1, 2]}, "cascade": "no answer within 900 s"}}
    line = targets(results, {(four, "cascade, fp16 wire"): 0.8, (four, "cascade"): 0.7}, [1, 2])
    assert "1.75x (cascade, fp16 wire), at 80 % of its floor" in line
    assert line.rstrip().endswith("NOT met: cascade.")
    assert "not measured" in targets({four: {"star": {"tokens_per_s": 2.0}}}, {}, [])
    assert "5 % loss: not run" in targets({}, {}, [])
