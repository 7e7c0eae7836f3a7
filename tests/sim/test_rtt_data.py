"""The RIPE Atlas RTT data set: shipped in the package, read strictly, replaceable by a path."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from hive_core.sim.errors import RttDataError, SimError
from hive_core.sim.rtt_data import (
    DATA_FILE,
    ENV_VAR,
    CountryRtt,
    data_source,
    load_country_rtt,
    shipped_data,
)

HEADER = "cty1,cty2,rtt_cnt,rtt_avg,rtt_std,rtt_min,rtt_max\n"
# The shared data set's checksum, as its README in the package states.
SHA256 = "5a0ff2aafa344ad885feeb52a0b79b29c0af4904a96e77cd3418366a18b1b52e"


@pytest.fixture(scope="module")
def ripe() -> CountryRtt:
    return load_country_rtt()


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.write(text)
    return path


def test_the_data_set_ships_in_the_package_with_its_readme() -> None:
    data = shipped_data()
    assert data.is_file() and data_source() == data
    assert hashlib.sha256(data.read_bytes()).hexdigest() == SHA256
    readme = resources.files("hive_core.sim").joinpath("data", "internet-rtt", "README.md")
    text = readme.read_text(encoding="utf-8")
    assert "RIPE Atlas" in text and "ouroboros-leios" in text and SHA256 in text


def test_loader_reads_the_real_data_set(ripe: CountryRtt) -> None:
    n = len(ripe.countries)
    assert 150 <= n <= 173 and "None" not in ripe.countries
    assert np.array_equal(ripe.rtt, ripe.rtt.T, equal_nan=True)
    assert np.array_equal(np.diag(ripe.rtt), np.zeros(n))
    share = ripe.measured.sum() / (n * (n - 1))
    assert 0.4 < share < 0.6  # "about half the pairs measured"
    de, fr = ripe.countries.index("DE"), ripe.countries.index("FR")
    assert 5.0 < ripe.rtt[de, fr] < 60.0  # neighbours in Europe: tens of ms at most
    # The triangle inequality is violated, as on the real internet.
    d = ripe.rtt
    assert (d[:, :, None] + d[None, :, :] < d[:, None, :] - 1e-9).any()  # d_ik + d_kj < d_ij


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a,b,c\n1,2,3\n", "unexpected columns"),
        (HEADER + "FR,DE,3,abc,1,1,1\n", r":2: rtt_avg is not a number"),
        (HEADER + "FR,DE,3,-4,1,1,1\n", "bad RTT"),
        (HEADER + "FR,DE,3,nan,1,1,1\n", "bad RTT"),
        (HEADER + "FR,DE,3\n", "expected 7 fields"),
        (HEADER + "FR,DE,3,4,1,1,1,9\n", "expected 7 fields"),
    ],
)
def test_loader_refuses_malformed_files(tmp_path: Path, body: str, message: str) -> None:
    path = write_gz(tmp_path / DATA_FILE, body)
    with pytest.raises(RttDataError, match=message):
        load_country_rtt(tmp_path)
    with pytest.raises(RttDataError, match=message):
        load_country_rtt(path)


def test_loader_refuses_unreadable_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / DATA_FILE).write_bytes(b"not gzip at all")
    with pytest.raises(RttDataError, match="unreadable RTT data set"):
        load_country_rtt(tmp_path)
    with pytest.raises(RttDataError, match="not found .*the path given.*RIPE Atlas"):
        load_country_rtt(tmp_path / "nowhere")
    with pytest.raises(RttDataError, match="stat must be one of"):
        load_country_rtt(tmp_path, stat="rtt_cnt")
    assert issubclass(RttDataError, SimError) and issubclass(RttDataError, ValueError)


def test_loader_keeps_intra_country_apart_and_skips_unknown(tmp_path: Path) -> None:
    body = HEADER + "DE,FR,5,12.5,1,10,20\nFR,FR,5,3,1,1,9\nNone,FR,5,99,1,1,1\nXX,XX,1,2,0,2,2\n"
    data = load_country_rtt(write_gz(tmp_path / DATA_FILE, body))
    assert data.countries == ("DE", "FR")  # XX has no pair abroad: dropped
    assert data.rtt[0, 1] == data.rtt[1, 0] == 12.5
    assert np.isnan(data.intra[0]) and data.intra[1] == 3.0


def test_the_environment_points_at_another_file_and_a_path_beats_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "env"
    other.mkdir()
    write_gz(other / DATA_FILE, HEADER + "DE,FR,5,12.5,1,10,20\n")
    monkeypatch.setenv(ENV_VAR, str(other))
    assert load_country_rtt().countries == ("DE", "FR")
    given = write_gz(tmp_path / "given.csv.gz", HEADER + "JP,US,5,120,1,100,150\n")
    assert load_country_rtt(given).countries == ("JP", "US")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(RttDataError, match=f"from \\${ENV_VAR}"):
        load_country_rtt()
