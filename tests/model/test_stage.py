"""Stage: the frozen unit of work shipped to nodes."""

from __future__ import annotations

import dataclasses

import pytest

from hive_core.base.stage import Part, Stage, even_stages, split_parts
from hive_core.model.errors import StageError


def test_stage_is_frozen_and_hashable() -> None:
    s = Stage(10, 20, Part.ATTENTION)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.start = 3  # type: ignore[misc]
    assert {s: 1}[Stage(10, 20, Part.ATTENTION)] == 1
    assert list(s.layers) == list(range(10, 20))


@pytest.mark.parametrize("start,end", [(-1, 3), (5, 5), (6, 2)])
def test_empty_or_negative_ranges_rejected(start: int, end: int) -> None:
    with pytest.raises(StageError, match="layer range"):
        Stage(start, end)


def test_part_must_be_enum_and_bounds_ints() -> None:
    with pytest.raises(StageError, match="Part"):
        Stage(0, 1, "full")  # type: ignore[arg-type]
    with pytest.raises(StageError, match="integers"):
        Stage(0, 1.5)  # type: ignore[arg-type]


def test_check_against_model_depth() -> None:
    Stage(20, 30).check(30)
    with pytest.raises(StageError, match="past the model's 30 layers"):
        Stage(20, 31).check(30)


def test_str_parse_round_trip() -> None:
    for s in (Stage(0, 10), Stage(3, 4, Part.MLP), Stage(10, 20, Part.ATTENTION)):
        assert Stage.parse(str(s)) == s
    assert Stage.parse("10:20") == Stage(10, 20, Part.FULL)
    for bad in ("10", "a:b", "1:2:both", "1:2:3:4", "5:2"):
        with pytest.raises(StageError):
            Stage.parse(bad)


def test_even_stages_cover_all_layers() -> None:
    stages = even_stages(30, 3)
    assert stages == [Stage(0, 10), Stage(10, 20), Stage(20, 30)]
    uneven = even_stages(7, 3)
    assert [len(s.layers) for s in uneven] == [3, 2, 2]
    assert uneven[-1].end == 7
    with pytest.raises(StageError):
        even_stages(3, 4)


def test_split_parts_alternates_attention_and_mlp() -> None:
    assert split_parts(Stage(2, 4)) == [
        Stage(2, 3, Part.ATTENTION), Stage(2, 3, Part.MLP),
        Stage(3, 4, Part.ATTENTION), Stage(3, 4, Part.MLP),
    ]
    assert split_parts(Stage(0, 2, Part.MLP)) == [Stage(0, 1, Part.MLP), Stage(1, 2, Part.MLP)]
