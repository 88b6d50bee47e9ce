"""The authors' lexicographic layer order mapped to hidden-state indices (issue 12, item 1)."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from medprobe.paper.layers import (
    authors_file_order,
    authors_to_hidden_state,
    hidden_state_to_authors,
)


@pytest.mark.parametrize("n", [80, 32, 1, 9, 10, 11, 101])
def test_file_order_is_what_sorted_glob_returns(tmp_path: Path, n: int) -> None:
    """Independent check: create the authors' files and sort their glob as their code does."""
    for layer in range(n):
        (tmp_path / f"tissue.{layer}.pt").write_bytes(b"")
    files = sorted(glob.glob(str(tmp_path / "*.pt")))
    assert authors_file_order(n) == [int(Path(f).name.split(".")[1]) for f in files]


def test_the_papers_layer_32_of_the_80b_is_hidden_state_39() -> None:
    assert authors_to_hidden_state(32, 80) == 39
    assert hidden_state_to_authors(39, 80) == 32
    assert authors_file_order(80)[:14] == [0, 1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 2, 20]


def test_9b_order() -> None:
    assert authors_file_order(32) == [0, 1, *range(10, 20), 2, *range(20, 30), 3, 30, 31,
                                      *range(4, 10)]  # fmt: skip
    assert [authors_to_hidden_state(i, 32) for i in (0, 2, 12, 13, 31)] == [1, 11, 3, 21, 10]


@pytest.mark.parametrize("n", [80, 32])
def test_round_trip_is_a_bijection(n: int) -> None:
    hs = [authors_to_hidden_state(i, n) for i in range(n)]
    assert sorted(hs) == list(range(1, n + 1))
    assert [hidden_state_to_authors(h, n) for h in hs] == list(range(n))


def test_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="0..79"):
        authors_to_hidden_state(80, 80)
    with pytest.raises(ValueError, match="blocks 1..80 only"):
        hidden_state_to_authors(0, 80)
    with pytest.raises(ValueError, match="positive int"):
        authors_file_order(0)
