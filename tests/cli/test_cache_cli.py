"""``medprobe cache``: list, verify, remove (issue 14, item 10)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from medprobe.cache import FeatureCache, cache_key
from medprobe.cli import cache as cache_cli
from medprobe.errors import CacheError, ConfigError


def _entry(cache: FeatureCache, seed: int, n: int = 6, model: str = "plip") -> str:
    key = cache_key({"test": seed})
    meta = {"key_spec": {"extractor": {"extractor": "clip", "hf_id": "vinid/plip"}},
            "skipped": [], "written_by": {"model": model, "task": "t1"}}  # fmt: skip
    w = cache.writer(key, [f"img{i}.png" for i in range(n)], [0, 3], meta=meta)
    rng = np.random.default_rng(seed)
    w.write({0: rng.normal(size=(n, 4)), 3: rng.normal(size=(n, 4))})
    w.finalize()
    return key


def test_list_shows_entries_partials_and_total(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cache = FeatureCache(tmp_path)
    key = _entry(cache, 1)
    partial = cache.writer(cache_key({"test": 2}), ["a.png", "b.png"], [0], meta={})
    partial.close()
    text = cache_cli.list_entries(cache)
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(key[:12]))
    assert "clip" in line and "vinid/plip" in line and "plip / t1" in line
    assert "layers 0,3" in line and "rows       6" in line
    assert f"partial {cache_key({'test': 2})[:12]}" in text and "no job is writing it" in text
    assert cache_cli.main(["--cache-dir", str(tmp_path)]) == 0
    assert key[:12] in capsys.readouterr().out


def test_remove_by_prefix_age_and_partials_never_a_busy_one(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    old, new = _entry(cache, 1), _entry(cache, 2)
    past = time.time() - 40 * 86400
    os.utime(cache.entry_dir(old) / "meta.json", (past, past))
    cache.mark_used(new)
    busy_key, idle_key = cache_key({"test": 3}), cache_key({"test": 4})
    for k in (busy_key, idle_key):
        cache.writer(k, ["a.png"], [0], meta={}).close()
    assert cache_cli.remove(cache, older_than_days=30, dry_run=True) == [cache.entry_dir(old)]
    assert cache.is_complete(old)  # a dry run removes nothing
    with cache.lock(busy_key):  # another job is extracting into this partial entry
        gone = cache_cli.remove(cache, older_than_days=30, partial=True)
    assert set(gone) == {cache.entry_dir(old), cache.partial_dir(idle_key)}
    assert cache.keys() == [new] and cache.partial_dir(busy_key).is_dir()
    assert cache_cli.remove(cache, [new[:8]]) == [cache.entry_dir(new)] and cache.keys() == []


def test_bad_prefix_and_empty_selection_are_one_line(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    _entry(cache, 1)
    with pytest.raises(CacheError, match=r"no entry matches 'zzzz' in .* \(medprobe cache list\)"):
        cache_cli.remove(cache, ["zzzz"])
    with pytest.raises(CacheError, match="name entries"):
        cache_cli.main(["--cache-dir", str(tmp_path), "remove"])


@pytest.mark.parametrize("days", ["-1", "nan"])
def test_a_negative_age_removes_nothing_and_is_refused(tmp_path: Path, days: str) -> None:
    """``--older-than -1`` selected every entry (each is older than -1 days) and removed it."""
    cache = FeatureCache(tmp_path)
    key = _entry(cache, 1)
    with pytest.raises(ConfigError) as e:
        cache_cli.main(["--cache-dir", str(tmp_path), "remove", "--older-than", days])
    assert str(e.value) == (
        f"medprobe cache remove: --older-than must be days >= 0, got {float(days)}"
    )
    assert cache.keys() == [key]


def test_a_missing_or_file_cache_dir_says_so(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A mistyped --cache-dir listed "(no complete entries)", and verify printed nothing."""
    missing = tmp_path / "nope"
    assert cache_cli.main(["--cache-dir", str(missing), "list"]) == 0
    assert capsys.readouterr().out == f"cache {missing}: no such folder (nothing is cached there)\n"
    assert cache_cli.main(["--cache-dir", str(missing), "verify"]) == 0
    assert capsys.readouterr().out == f"no entries to verify in {missing}\n"
    (tmp_path / "f").write_text("x")
    with pytest.raises(
        CacheError, match=r"f is not a folder \(--cache-dir names the cache folder\)"
    ):
        cache_cli.main(["--cache-dir", str(tmp_path / "f"), "list"])


def test_an_empty_medprobe_cache_dir_is_refused_as_a_run_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty $MEDPROBE_CACHE_DIR listed ~/.cache/medprobe here while a run refused it."""
    monkeypatch.setenv("MEDPROBE_CACHE_DIR", "")
    with pytest.raises(ConfigError, match="MEDPROBE_CACHE_DIR is set but empty"):
        cache_cli.main(["list"])
    # --cache-dir needs no environment
    assert cache_cli.main(["--cache-dir", str(tmp_path), "list"]) == 0
    assert str(tmp_path) in capsys.readouterr().out


def test_verify_flags_a_tampered_entry(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cache = FeatureCache(tmp_path)
    key = _entry(cache, 1)
    assert cache_cli.main(["--cache-dir", str(tmp_path), "verify"]) == 0
    assert f"{key[:12]}  ok" in capsys.readouterr().out
    ids = cache.entry_dir(key) / "ids.txt"
    ids.write_text(ids.read_text().replace("img0", "imgX"))
    assert cache_cli.main(["--cache-dir", str(tmp_path), "verify", key[:6]]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_remove_by_age_dates_a_damaged_entry_by_its_folder(
    tmp_path: Path,
) -> None:
    """A damaged meta.json made ``remove --older-than`` stop ("cannot read ...meta.json")."""
    cache = FeatureCache(tmp_path)
    good, bad = _entry(cache, 1), _entry(cache, 2)
    (cache.entry_dir(bad) / "meta.json").write_text("{garbage")
    old = time.time() - 40 * 86400
    os.utime(cache.entry_dir(bad), (old, old))
    gone = cache_cli.remove(cache, older_than_days=30)
    assert gone == [cache.entry_dir(bad)] and cache.keys() == [good]
    cache_cli.remove(cache, [good[:8]])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == []
    leftover = tmp_path / f".removing-{good}-123"  # a removal killed midway
    (leftover / "sub").mkdir(parents=True)
    assert cache_cli.remove(cache, partial=True) == [leftover] and not leftover.exists()
