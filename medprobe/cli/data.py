"""``medprobe data [overrides]``: the data check before any GPU time (issue 16.7).

Takes the same overrides as a run (``task=... data_root=... task.test_fraction=...``), builds
the task's manifest, loads every image once (as extraction would), makes the split, and
prints counts per class per split, patients, the rows left out and the unreadable files with
their reasons; then runs every check a run makes before loading a model
(:func:`medprobe.pipeline.data.check_data`). No model is built or loaded.

Writes ``manifest.csv`` (id, path, label, split, patient_id) and ``data.json`` (the same
summary a run stores as ``results.json`` ``data``) to ``--out`` (default: ``output_dir=`` if
given, else ``outputs/<task>/data``). Exit status 0 when a run would start; a failed check is
one ``medprobe: error:`` line after the summary, exit 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medprobe.cli.common import ArgumentParser, folder
from medprobe.errors import BadImagesError, ConfigError

DATA_FILE = "data.json"


def compose(overrides: Sequence[str]) -> Any:
    """The typed config for ``overrides``, composed as ``medprobe run`` composes it.

    Raises:
        ConfigError: Hydra cannot compose it (unknown group option, key or bad value).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from medprobe.cli.run import _one_line
    from medprobe.config import conf_dir, register_configs, to_typed

    register_configs()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        return to_typed(cfg)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_one_line(e)) from None


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="medprobe data",
        description="Check a task's data before any GPU time: manifest, image scan, split, "
        "counts per class per split, patients, exclusions and bad files. No model is loaded.",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="the same overrides as a run, e.g. task=csv data_root=/data/knee",
    )
    p.add_argument(
        "--out",
        type=folder,
        default=None,
        help="folder for manifest.csv and data.json (default: output_dir= if given, else "
        "outputs/<task>/data)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the data check; returns 0 when a run's data checks would pass.

    Raises:
        ConfigError: bad overrides, or a split on which the metrics would be made up.
        medprobe.errors.ManifestError: bad task files (every bad row listed).
        BadImagesError: unreadable images under ``data.on_error=stop`` (after the summary).
    """
    from medprobe.data.check import MANIFEST_FILE, format_summary, write_manifest_csv
    from medprobe.pipeline.data import check_data, load_data
    from medprobe.results import write_json

    args = build_parser().parse_intermixed_args(argv)
    bad_keys = [o for o in args.overrides if "=" not in o]
    if bad_keys:
        raise ConfigError(f"medprobe data: overrides are key=value, got {bad_keys[0]!r}")
    cfg = compose(args.overrides)
    out = args.out or (
        Path(cfg.output_dir) if cfg.output_dir else Path("outputs") / cfg.task.name / "data"
    )
    data = load_data(cfg, scan=True, check=False)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = write_manifest_csv(data.manifest, out / MANIFEST_FILE)
    print(format_summary(data.summary), flush=True)
    problem: str | None = None
    try:
        rows = check_data(cfg, data.manifest)
    except ConfigError as e:
        problem = str(e)
    checks: dict[str, Any] = {"passed": problem is None, "problem": problem}
    if problem is None:
        checks["probe_rows"] = {"fit": len(rows.fit), "val": len(rows.val),
                                "test": len(rows.test), "validation": rows.val_source}  # fmt: skip
    write_json(out / DATA_FILE, {**data.summary, "checks": checks})
    print(f"manifest: {manifest_path}\nsummary: {out / DATA_FILE}", flush=True)
    if problem is not None:
        raise ConfigError(problem)
    n_bad = data.summary["bad_images"]["n"]
    if n_bad and str(cfg.data.on_error) == "stop":
        raise BadImagesError(
            f"{n_bad} unreadable image(s) (listed above): a run stops on them; fix or remove "
            "them, or run with data.on_error=skip to leave them out before the split"
        )
    print(
        f"checks: passed (probe rows: fit {len(rows.fit)}, val {len(rows.val)}, "
        f"test {len(rows.test)}; validation: {rows.val_source})",
        flush=True,
    )
    return 0
