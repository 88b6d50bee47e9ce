"""``medprobe cache``: list, verify and prune the feature cache.

The cache only grows by itself: one entry per (extractor, images, layers, preprocessing).
This subcommand shows what is there and removes what the user selects:

- ``medprobe cache [list]``: every complete entry (key, model kind and weights, the model and
  task that wrote it, layers, rows, size, age, last use), entries set aside as corrupt,
  partial entries (with whether a job is writing them now) and their total size.
- ``medprobe cache verify [KEY ...]``: check entries against their recorded checksums.
- ``medprobe cache remove KEY [...]`` / ``--older-than DAYS`` / ``--corrupt`` / ``--partials``:
  delete entries (a prefix of a key is enough when unambiguous). A partial entry is removed
  only when no job holds its lock, so another job's extraction is never touched; a complete
  entry is removed under its lock too. ``--dry-run`` lists what would go.

The cache folder is ``--cache-dir``, else ``$MEDPROBE_CACHE_DIR``, else ``~/.cache/medprobe``
(as ``cache_dir`` of a run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medprobe.cache import LAST_USED_FILE, FeatureCache
from medprobe.cli.common import ArgumentParser
from medprobe.errors import CacheError, ConfigError


def default_cache_dir() -> Path:
    """``$MEDPROBE_CACHE_DIR`` or ``~/.cache/medprobe`` (the default ``cache_dir`` of a run).

    Raises:
        ConfigError: ``$MEDPROBE_CACHE_DIR`` is set but empty (a run refuses it too: it would
            put the cache in the working folder).
    """
    env = os.environ.get("MEDPROBE_CACHE_DIR")
    if env is not None and not env.strip():
        raise ConfigError(
            "MEDPROBE_CACHE_DIR is set but empty: unset it (the default is ~/.cache/medprobe) "
            "or name a folder"
        )
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medprobe"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _fmt_age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@dataclass
class EntryInfo:
    """One complete cache entry, as listed.

    Attributes:
        key: the entry's key (64 hex digits).
        extractor: the extractor kind (``effnet_lite0``, ``clip``, ``idefics``, ...).
        weights: the checkpoint (hub id, local folder, or a weights digest), as fingerprinted.
        written_by: ``model / task`` identities of the job that wrote it (older entries: "").
        layers: the layers stored; rows: images; size: bytes on disk.
        created: seconds since the epoch; last_used: seconds since the epoch of the last read.
    """

    key: str
    extractor: str
    weights: str
    written_by: str
    layers: list[Any]
    rows: int
    size: int
    created: float
    last_used: float


def _weights(fp: dict[str, Any]) -> str:
    for k in ("hf_id", "source", "checkpoint", "model_id"):
        if isinstance(fp.get(k), str):
            return str(fp[k])
    for k, v in fp.items():
        if "sha256" in k and isinstance(v, str):
            return f"{k}={v[:12]}"
    return ""


def entry_info(cache: FeatureCache, key: str) -> EntryInfo:
    """What :func:`list_entries` shows of one entry.

    Raises:
        CacheError: the entry's meta.json cannot be read.
    """
    meta = cache.meta(key, set_aside=False)
    spec = meta.get("spec", {})
    fp = spec.get("key_spec", {}).get("extractor", {})
    who = spec.get("written_by", {})
    d = cache.entry_dir(key)
    created = (d / "meta.json").stat().st_mtime
    last = d / LAST_USED_FILE
    return EntryInfo(
        key=key,
        extractor=str(fp.get("extractor", "?")),
        weights=_weights(fp),
        written_by=f"{who.get('model', '?')} / {who.get('task', '?')}" if who else "",
        layers=list(meta["layers"]),
        rows=int(meta["n"]),
        size=_size(d),
        created=created,
        last_used=last.stat().st_mtime if last.is_file() else created,
    )


def _layers_text(layers: Sequence[Any]) -> str:
    ints = [x for x in layers if isinstance(x, int)]
    names = [str(x) for x in layers if not isinstance(x, int)]
    text = f"{min(ints)}-{max(ints)}" if len(ints) > 2 else ",".join(map(str, ints))
    return ",".join(filter(None, [text, *names]))


def list_entries(cache: FeatureCache, now: float | None = None) -> str:
    """The ``medprobe cache list`` text (one line per entry, then corrupt and partial ones)."""
    now = time.time() if now is None else now
    lines = [f"cache {cache.root}"]
    if not cache.root.exists():  # a mistyped --cache-dir, or nothing cached yet
        return f"cache {cache.root}: no such folder (nothing is cached there)"
    total = 0
    rows = []
    for key in cache.keys():
        try:
            e = entry_info(cache, key)
        except (CacheError, OSError) as exc:
            rows.append(f"  {key[:12]}  unreadable: {exc}")
            continue
        total += e.size
        rows.append(
            f"  {e.key[:12]}  {e.extractor:<13} {e.weights[:40]:<40}  {e.written_by:<24}  "
            f"layers {_layers_text(e.layers):<10} rows {e.rows:>7}  {_fmt_bytes(e.size):>9}  "
            f"age {_fmt_age(now - e.created):>8}  used {_fmt_age(now - e.last_used):>8} ago"
        )
    lines += rows or ["  (no complete entries)"]
    for p in cache.corrupt_entries():
        total += _size(p)
        lines.append(f"  set aside as corrupt: {p.name} ({_fmt_bytes(_size(p))})")
    for key, path, busy in partials(cache):
        total += _size(path)
        state = "being written by a running job" if busy else "no job is writing it"
        lines.append(f"  partial {key[:12]} ({_fmt_bytes(_size(path))}): {state}")
    lines.append(f"total {_fmt_bytes(total)}")
    return "\n".join(lines)


def partials(cache: FeatureCache) -> list[tuple[str, Path, bool]]:
    """(key, folder, busy) of every partial entry; busy = a job holds its lock now."""
    import filelock

    out: list[tuple[str, Path, bool]] = []
    if not cache.root.is_dir():
        return out
    for p in sorted(cache.root.glob(".partial-*")):
        key = p.name[len(".partial-") :]
        try:
            with cache.lock(key, timeout=0):
                busy = False
        except filelock.Timeout:
            busy = True
        except CacheError:
            continue
        out.append((key, p, busy))
    return out


def _resolve(cache: FeatureCache, prefixes: Sequence[str]) -> list[str]:
    keys = cache.keys()
    out = []
    for pre in prefixes:
        hits = [k for k in keys if k.startswith(pre)]
        if len(hits) != 1:
            why = "no entry matches" if not hits else f"{len(hits)} entries match"
            raise CacheError(f"{why} {pre!r} in {cache.root} (medprobe cache list)")
        out.append(hits[0])
    return out


def remove(
    cache: FeatureCache,
    keys: Sequence[str] = (),
    *,
    older_than_days: float | None = None,
    corrupt: bool = False,
    partial: bool = False,
    dry_run: bool = False,
    now: float | None = None,
) -> list[Path]:
    """Delete the selected entries; return the folders removed (or that would be).

    Complete entries: those named (key prefixes) and those last used more than
    ``older_than_days`` ago, each under its lock (a job reading it without the lock may still
    have it open: removal never corrupts another entry, and that job's next run recomputes).
    ``corrupt``: the entries set aside by verification. ``partial``: partial entries no job is
    writing (their lock is free); a partial entry a running job holds is never touched.

    Raises:
        CacheError: a key prefix that matches no entry or several.
    """
    import filelock

    now = time.time() if now is None else now
    chosen = set(_resolve(cache, keys))
    if older_than_days is not None:
        for key in cache.keys():
            try:
                last_used = entry_info(cache, key).last_used
            except (CacheError, OSError):  # a damaged meta.json: the folder's own time
                last_used = cache.entry_dir(key).stat().st_mtime
            if now - last_used > older_than_days * 86400:
                chosen.add(key)
    gone: list[Path] = []
    for key in sorted(chosen):
        path = cache.entry_dir(key)
        if dry_run:
            gone.append(path)
            continue
        try:
            with cache.lock(key, timeout=0):
                # renamed first, so a job reading the entry meanwhile finds it gone (a miss),
                # never half deleted (which it would set aside as corrupt)
                doomed = path.with_name(f".removing-{key}-{os.getpid()}")
                os.rename(path, doomed)
                shutil.rmtree(doomed)
                gone.append(path)
        except filelock.Timeout:
            continue  # a job is extracting into this key right now
    if corrupt:
        for p in cache.corrupt_entries():
            if not dry_run:
                shutil.rmtree(p)
            gone.append(p)
    if partial:
        # a removal killed between its rename and the end of its rmtree
        for p in sorted(cache.root.glob(".removing-*")) if cache.root.is_dir() else []:
            if not dry_run:
                shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
        for key, p, busy in partials(cache):
            if busy:
                continue
            if not dry_run:
                try:
                    with cache.lock(key, timeout=0):
                        shutil.rmtree(p)
                except filelock.Timeout:
                    continue
            gone.append(p)
    return gone


def main(argv: Sequence[str]) -> int:
    """``medprobe cache [list|verify|remove] ...``; returns 0 (1 when verification failed).

    Raises:
        CacheError: a bad key prefix or an unreadable cache; ConfigError: bad arguments.
    """
    common = ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", type=Path, default=argparse.SUPPRESS,
                        help="the cache folder (default: $MEDPROBE_CACHE_DIR or "
                        "~/.cache/medprobe)")  # fmt: skip
    ap = ArgumentParser(prog="medprobe cache", parents=[common],
                        description="List, verify and remove feature-cache entries.")  # fmt: skip
    sub = ap.add_subparsers(dest="action")
    sub.add_parser("list", parents=[common],
                   help="every entry with its size, age and last use (the default)")  # fmt: skip
    v = sub.add_parser("verify", parents=[common],
                       help="check entries against their recorded checksums")  # fmt: skip
    v.add_argument("keys", nargs="*", help="key prefixes (default: every entry)")
    r = sub.add_parser("remove", parents=[common],
                       help="delete entries; name at least one selection")  # fmt: skip
    r.add_argument("keys", nargs="*", help="key prefixes of entries to delete")
    r.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                   help="entries not used for more than DAYS days")  # fmt: skip
    r.add_argument("--corrupt", action="store_true", help="entries set aside as corrupt")
    r.add_argument("--partials", action="store_true",
                   help="partial entries of jobs that are no longer running (and the rest of "
                   "a removal that was killed)")  # fmt: skip
    r.add_argument("--dry-run", action="store_true", help="list what would be removed")
    args = ap.parse_args(list(argv))
    given = getattr(args, "cache_dir", None)  # before or after the action
    cache = FeatureCache(given.expanduser() if given else default_cache_dir())
    if cache.root.exists() and not cache.root.is_dir():
        raise CacheError(f"{cache.root} is not a folder (--cache-dir names the cache folder)")
    older = getattr(args, "older_than", None)
    if older is not None and not older >= 0:
        # -1 selected every entry (all are older than -1 days), nan none
        raise ConfigError(f"medprobe cache remove: --older-than must be days >= 0, got {older}")
    if args.action in (None, "list"):
        print(list_entries(cache))
        return 0
    if args.action == "verify":
        keys = _resolve(cache, args.keys) if args.keys else cache.keys()
        if not keys:
            print(f"no entries to verify in {cache.root}")
        bad = 0
        for key in keys:
            try:
                res = cache.verify(key)
            except CacheError as e:
                bad += 1
                print(f"{key[:12]}  FAILED: {e}")
                continue
            state = "ok" if res.get("verified") else f"unverified ({res.get('reason')})"
            print(f"{key[:12]}  {state}")
        return 1 if bad else 0
    if not (args.keys or args.older_than is not None or args.corrupt or args.partials):
        raise CacheError(
            "medprobe cache remove: name entries (key prefixes), --older-than DAYS, --corrupt "
            "or --partials"
        )
    gone = remove(cache, args.keys, older_than_days=args.older_than, corrupt=args.corrupt,
                  partial=args.partials, dry_run=args.dry_run)  # fmt: skip
    verb = "would remove" if args.dry_run else "removed"
    for p in gone:
        print(f"{verb} {p}")
    print(f"{verb} {len(gone)} folder(s)")
    return 0
