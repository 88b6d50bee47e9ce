"""The results schema: the one module that writes and reads a run's files.

A probing job (:func:`medprobe.runner.run`) leaves three files in its output folder, and
everything downstream (:mod:`medprobe.compare`, :mod:`medprobe.report`,
:mod:`medprobe.tracking`, the notebooks) reads them through this module only, as typed
objects, never by raw dict keys:

- ``results.json``: one :class:`Results` (``to_json``/``from_json``), written atomically
  (temp file + rename) with NaN written as ``null``. Top-level keys, in file order:
  ``schema_version``, ``task``, ``task_kind``, ``model``, ``model_kind``, ``model_id``,
  ``layer``, ``train_fraction``, ``seed``, ``primary_metric``, ``metrics``, ``bootstrap``,
  ``probe``, ``counts``, ``classes``, ``multilabel``, ``task_info``, ``cache``,
  ``extractor``, ``extractor_load``, ``prompt``, ``config``, ``versions``, ``output_dir``,
  ``overrides``, ``notes``, ``timings_s``, ``tracker``, ``predictions_sha256``, ``job_key``,
  ``data`` (the data check: :func:`medprobe.data.check.summary`).
- ``predictions.csv``: one row per test example, :class:`Predictions` (columns ``id``,
  ``split``, ``label`` (class names, ``|``-joined when multi-label), ``p_<class>`` per class,
  and ``group`` (patient id) for tasks with patient ids; files without it still read).
- ``layers.json`` (``layer=all`` jobs): the layer curve, :class:`LayerCurve`.

Identity versus kind: ``task``/``model`` are the identities (the config choices
``cfg.task.name``/``cfg.model.name``: ``clip``, ``plip``, ``t5``, a ``task=csv`` data set's
name); ``task_kind``/``model_kind`` the adapter/extractor registry keys that built them
(``plip`` is built by the ``clip`` extractor). Everything that groups, labels or names runs
keys on the identity.

Schema versions: :data:`SCHEMA_VERSION` is written into every file. A ``results.json``
without ``schema_version`` is version 1 (medprobe before this module) and is still read: its
missing ``task_kind``/``model_kind`` are taken to equal ``task``/``model`` (files written
before identity and kind were separated recorded the extractor kind as ``model``, so such a
file's ``model`` may be ``clip`` for a PLIP run: rerun it to get the identity), and keys that
older versions did not write get the neutral values listed in :data:`V1_DEFAULTS`. A file of a
newer schema, or one missing a key this schema needs, is refused with a one-line
:class:`~medprobe.errors.ResultsError` naming the file and the key.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.errors import ResultsError

__all__ = [
    "LAYERS_FILE",
    "PREDICTIONS_FILE",
    "RESULTS_FILE",
    "SCHEMA_VERSION",
    "V1_DEFAULTS",
    "Bootstrap",
    "CacheInfo",
    "Counts",
    "LayerCurve",
    "LayerPoint",
    "MetricSummary",
    "Metrics",
    "Predictions",
    "ProbeInfo",
    "Results",
    "ResultsError",
    "TrackerInfo",
    "find_results",
    "format_layer_curve",
    "format_table",
    "layer_curve",
    "read_layer_curve",
    "read_predictions",
    "read_results",
    "run_notes",
    "write_json",
    "write_layer_curve",
    "write_predictions",
    "write_results",
]

#: Version of the files this module writes. 1: files without ``schema_version`` (before this
#: module); 2: ``schema_version`` written, ``task_kind``/``model_kind`` always present.
SCHEMA_VERSION = 2
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.csv"
LAYERS_FILE = "layers.json"

#: What a version-1 ``results.json`` may lack and the value it is read with (top-level keys,
#: and ``probe.<key>``/``counts.<key>`` for nested ones); ``task_kind``, ``model_kind`` and
#: ``model_id`` default to ``task``, ``model`` and ``model`` (see the module docstring).
V1_DEFAULTS: dict[str, Any] = {
    "primary_metric": "auroc_macro",
    "task_info": {},
    "extractor_load": None,
    "prompt": None,
    "overrides": [],
    "notes": [],
    "timings_s": {},
    "probe.backend": "sklearn",
    "counts.constant_features": False,
}


def _float(x: Any) -> float:
    """JSON number or null (a NaN written by :func:`write_json`) -> float."""
    return math.nan if x is None else float(x)


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True, kw_only=True)
class MetricSummary:
    """One metric with its bootstrap summary (:func:`medprobe.stats.summarize`).

    ``value`` is the point estimate on the full test set; ``mean`` (= ``boot_mean``, the
    bootstrap mean the paper plots), ``sd`` (``ddof=1``, NaN with a single valid replicate)
    summarise the ``n_replicates`` valid bootstrap replicates; ``ci_low``/``ci_high`` is the
    CI at ``Bootstrap.ci`` computed by ``ci_method`` (``percentile`` unless chosen otherwise;
    docs/statistics.md).
    """

    value: float
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    n_replicates: int
    ci_method: str = "percentile"

    @property
    def boot_mean(self) -> float:
        """The mean of the bootstrap replicates (the paper's plotted value)."""
        return self.mean

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MetricSummary:
        return cls(
            value=_float(d["value"]),
            mean=_float(d.get("boot_mean", d["mean"])),
            sd=_float(d["sd"]),
            ci_low=_float(d["ci_low"]),
            ci_high=_float(d["ci_high"]),
            n_replicates=int(d["n_replicates"]),
            ci_method=str(d.get("ci_method", "percentile")),
        )

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["boot_mean"] = self.mean
        return out


@dataclass(frozen=True)
class Metrics(Mapping[str, MetricSummary]):
    """Metric name -> :class:`MetricSummary`, in file order, plus the absent classes.

    Names (:func:`medprobe.stats.evaluate`): ``auroc_macro``, ``auroc/<class>`` (each class
    present in test), ``f1_macro``, ``accuracy``. ``absent_classes``: classes without
    positives (multi-label: without positives or negatives) in test, left out of AUROC.
    In ``results.json`` this is one flat object: the summaries and ``"absent_classes"``.
    """

    summaries: dict[str, MetricSummary]
    absent_classes: list[str] = field(default_factory=list)
    #: what the bootstrap resampled: ``image``, or ``patient`` (a cluster bootstrap)
    resampling_unit: str = "image"
    n_resampling_units: int | None = None

    def __getitem__(self, name: str) -> MetricSummary:
        return self.summaries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.summaries)

    def __len__(self) -> int:
        return len(self.summaries)

    def per_class(self) -> dict[str, MetricSummary]:
        """Class name -> its one-vs-rest AUROC (``auroc/<class>`` entries, file order)."""
        return {k.split("/", 1)[1]: v for k, v in self.summaries.items() if k.startswith("auroc/")}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Metrics:
        n_units = d.get("n_resampling_units")
        return cls(
            {k: MetricSummary.from_json(v) for k, v in d.items() if isinstance(v, Mapping)},
            [str(c) for c in d.get("absent_classes", [])],
            str(d.get("resampling_unit", "image")),
            None if n_units is None else int(n_units),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v.to_json() for k, v in self.summaries.items()}
        out["absent_classes"] = list(self.absent_classes)
        out["resampling_unit"] = self.resampling_unit
        if self.n_resampling_units is not None:
            out["n_resampling_units"] = self.n_resampling_units
        return out


@dataclass(frozen=True, kw_only=True)
class Bootstrap:
    """``n`` replicates, two-sided CI level ``ci``; replicates seeded by ``seeded_by`` =
    ``[task, "test", seed]`` (:func:`medprobe.stats.bootstrap_seed`; never by the model, so
    two models' CIs are paired)."""

    n: int
    ci: float
    seeded_by: list[Any]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Bootstrap:
        return cls(n=int(d["n"]), ci=float(d["ci"]), seeded_by=list(d["seeded_by"]))


@dataclass(frozen=True, kw_only=True)
class ProbeInfo:
    """The fitted probe: registry ``name``, solver ``backend`` (sklearn | torch), the chosen
    ``C`` and its validation score ``val_score`` (``selection_metric``), every candidate in
    ``selection`` (``[{"C", "score"}, ...]``), whether every fit ``converged``, and where the
    validation rows came from (``validation_rows``)."""

    name: str
    backend: str
    C: float
    val_score: float
    selection_metric: str
    selection: list[dict[str, float]]
    converged: bool
    validation_rows: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProbeInfo:
        return cls(
            name=str(d["name"]),
            backend=str(d["backend"]),
            C=_float(d["C"]),
            val_score=_float(d["val_score"]),
            selection_metric=str(d["selection_metric"]),
            selection=[dict(s) for s in d["selection"]],
            converged=bool(d["converged"]),
            validation_rows=str(d["validation_rows"]),
        )


@dataclass(frozen=True, kw_only=True)
class Counts:
    """Rows the probe was fitted on (``fit``), validated on (``val``) and tested on
    (``test``); examples per split and class (``per_split[split][class]``); unreadable
    images left out; feature width; whether the layer's features are the same for every
    fitted image (``constant_features``).

    The label budget: ``labelled`` = ``fit + val``, every labelled row the run used (to fit
    the probe or to choose C); ``fraction_of`` says what ``train_fraction`` was a fraction
    of: ``pool`` (fit and validation rows, the default since issue 13) or ``fit`` (the fit
    rows only, validation rows in full). Files written before issue 13 are read with
    ``labelled = fit + val`` and ``fraction_of = "fit"`` (what those runs did)."""

    fit: int
    val: int
    test: int
    per_split: dict[str, dict[str, int]]
    skipped_images: int
    feature_dim: int
    constant_features: bool
    labelled: int = -1
    fraction_of: str = "pool"

    def __post_init__(self) -> None:
        if self.labelled < 0:
            object.__setattr__(self, "labelled", self.fit + self.val)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Counts:
        return cls(
            fit=int(d["fit"]),
            val=int(d["val"]),
            test=int(d["test"]),
            per_split={s: {c: int(n) for c, n in v.items()} for s, v in d["per_split"].items()},
            skipped_images=int(d["skipped_images"]),
            feature_dim=int(d["feature_dim"]),
            constant_features=bool(d["constant_features"]),
            labelled=int(d.get("labelled", int(d["fit"]) + int(d["val"]))),
            fraction_of=str(d.get("fraction_of", "fit")),
        )


_CACHE_OPTIONAL = (
    "resumed_from",
    "processes",
    "far_from_square",
    "extracted_rows",
    "reused_rows",
    "reused_from",
)


@dataclass(frozen=True, kw_only=True)
class CacheInfo:
    """The feature-cache entry used: ``cache_key`` (hex) in ``cache_dir``; ``cache_hit``;
    rows found already written by a killed run (``resumed_from``, None on a hit);
    ``skipped_images`` as ``[path, reason]`` pairs; seconds spent making sure the features
    exist (``extract_seconds``); data-parallel processes (``processes``, None for one); the
    share of the manifest's images whose aspect ratio is at least
    :data:`medprobe.data.images.FAR_FROM_SQUARE` (``far_from_square``, from file headers;
    None when not measured: files written before issue 14.5); on a miss, the rows this run
    extracted (``extracted_rows``) and those copied from other entries of the same extractor
    fingerprint for images of the same content (``reused_rows``, and ``reused_from``:
    ``[{"key": entry key, "rows": n}, ...]``; issue 14.11). The optional keys are left out of
    ``results.json`` when None."""

    cache_key: str
    cache_dir: str
    cache_hit: bool
    resumed_from: int | None = None
    skipped_images: list[list[str]]
    extract_seconds: float
    processes: int | None = None
    far_from_square: float | None = None
    extracted_rows: int | None = None
    reused_rows: int | None = None
    reused_from: list[dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        """As in ``results.json``: ``resumed_from`` and ``processes`` only when set."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in out.items() if v is not None or k not in _CACHE_OPTIONAL}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CacheInfo:
        """From ``results.json`` or from the features stage's info dict (a ``spec`` key and
        other extra keys are ignored)."""
        resumed, procs = d.get("resumed_from"), d.get("processes")
        far = d.get("far_from_square")
        extracted, reused, sources = (d.get(k) for k in ("extracted_rows", "reused_rows",
                                                          "reused_from"))  # fmt: skip
        return cls(
            cache_key=str(d["cache_key"]),
            cache_dir=str(d["cache_dir"]),
            cache_hit=bool(d["cache_hit"]),
            resumed_from=None if resumed is None else int(resumed),
            skipped_images=[[str(x) for x in s] for s in d["skipped_images"]],
            extract_seconds=float(d["extract_seconds"]),
            processes=None if procs is None else int(procs),
            far_from_square=None if far is None else float(far),
            extracted_rows=None if extracted is None else int(extracted),
            reused_rows=None if reused is None else int(reused),
            reused_from=None
            if sources is None
            else [{"key": str(x["key"]), "rows": int(x["rows"])} for x in sources],
        )


@dataclass(frozen=True, kw_only=True)
class TrackerInfo:
    """Where the W&B sink logged a run (:mod:`medprobe.tracking`), or why it could not
    (``error``, ``"<ExceptionType>: <message>"``; the other fields None)."""

    id: str | None = None
    name: str | None = None
    group: str | None = None
    mode: str | None = None
    dir: str | None = None
    error: str | None = None
    #: why the run is offline although online was asked (W&B unreachable, a wrong key)
    note: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> TrackerInfo | None:
        if d is None:
            return None
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True, kw_only=True)
class Results:
    """One probing job's results (one task, model, layer, training fraction and seed).

    Identity: ``task``/``model`` (config choices, what reports and names key on);
    ``task_kind``/``model_kind`` (registry keys that built them); ``model_id`` (hub id or
    local weights folder). ``layer`` is an int (0 = embedding/stem output, k = block k) or
    a named layer (``pooled``). ``train_fraction`` in (0, 1]; ``seed`` >= 0.
    ``primary_metric`` names the task's headline entry of ``metrics``.

    Context: ``classes`` (K names, the ``p_<class>`` columns of ``predictions.csv``),
    ``multilabel``, ``task_info`` (the adapter's facts), ``cache``, ``extractor`` (the
    extractor's fingerprint), ``extractor_load`` (what a large model loaded, else None),
    ``prompt`` (text a language model read, None for vision-only models), ``config`` (the
    resolved config), ``versions``, ``output_dir`` (where the job wrote), ``overrides``
    (command line), ``notes`` (warnings under the console table), ``timings_s``
    (seconds per stage), ``tracker`` (None when not tracked).

    ``run_dir`` is not written: :func:`read_results` sets it to the folder the file was
    read from (runs may have been moved since ``output_dir`` was recorded).
    """

    schema_version: int = SCHEMA_VERSION
    task: str
    task_kind: str
    model: str
    model_kind: str
    model_id: str
    layer: int | str
    train_fraction: float
    seed: int
    primary_metric: str
    metrics: Metrics
    bootstrap: Bootstrap
    probe: ProbeInfo
    counts: Counts
    classes: list[str]
    multilabel: bool
    task_info: dict[str, Any]
    cache: CacheInfo
    extractor: dict[str, Any]
    extractor_load: dict[str, Any] | None
    prompt: str | None
    config: dict[str, Any]
    versions: dict[str, str | None]
    output_dir: str
    overrides: list[str]
    notes: list[str]
    timings_s: dict[str, float]
    tracker: TrackerInfo | None = None
    #: sha256 of this run's predictions.csv (readers refuse a file that is not this run's)
    predictions_sha256: str | None = None
    #: digest of the settings that define the job (:func:`medprobe.pipeline.job.job_key`); a
    #: folder holding another job's results is refused
    job_key: str | None = None
    #: the data check's summary (:func:`medprobe.data.check.summary`, what ``medprobe data``
    #: prints): counts per class per split, patients, excluded rows and unreadable images with
    #: their reasons, the split's digest ``split_sha256``; None in files written before it
    data: dict[str, Any] | None = None
    run_dir: Path | None = field(default=None, compare=False)

    @property
    def primary(self) -> MetricSummary:
        """The summary of ``primary_metric``."""
        return self.metrics[self.primary_metric]

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` object (keys in :mod:`medprobe.results` order; NaN kept as
        float: :func:`write_json` writes it as null)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "run_dir":
                continue
            v = getattr(self, f.name)
            if isinstance(v, Metrics):
                v = v.to_json()
            elif isinstance(v, CacheInfo):
                v = v.to_json()
            elif isinstance(v, TrackerInfo | Bootstrap | ProbeInfo | Counts):
                v = {g.name: getattr(v, g.name) for g in fields(v)}
            out[f.name] = v
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, source: str = "results.json") -> Results:
        """Parse a ``results.json`` object (any supported schema version).

        Raises:
            ResultsError: a newer schema version, a missing key or a malformed value (one
                line naming ``source`` and the key).
        """
        d = dict(d)
        version = d.get("schema_version", 1)
        if not isinstance(version, int) or version < 1:
            raise ResultsError(f"{source}: schema_version {version!r} is not a version number")
        if version > SCHEMA_VERSION:
            raise ResultsError(
                f"{source}: written with results schema {version}, newer than this medprobe "
                f"reads ({SCHEMA_VERSION}); upgrade medprobe"
            )
        if version == 1:
            d = _upgrade_v1(d)
        optional = ("schema_version", "run_dir", "tracker", "predictions_sha256", "job_key", "data")
        need = [f.name for f in fields(cls) if f.name not in optional]
        missing = [k for k in need if k not in d]
        if missing:
            raise ResultsError(
                f"{source}: not a medprobe results file (no {', '.join(map(repr, missing))})"
            )
        key = ""
        try:
            key = "metrics"
            metrics = Metrics.from_json(d["metrics"])
            key = "bootstrap"
            bootstrap = Bootstrap.from_json(d["bootstrap"])
            key = "probe"
            probe = ProbeInfo.from_json(d["probe"])
            key = "counts"
            counts = Counts.from_json(d["counts"])
            key = "cache"
            cache = CacheInfo.from_json(d["cache"])
            key = "tracker"
            tracker = TrackerInfo.from_json(d.get("tracker"))
            key = "layer"
            layer = d["layer"] if isinstance(d["layer"], int) else str(d["layer"])
            key = "identity"
            return cls(
                schema_version=SCHEMA_VERSION,
                task=str(d["task"]),
                task_kind=str(d["task_kind"]),
                model=str(d["model"]),
                model_kind=str(d["model_kind"]),
                model_id=str(d["model_id"]),
                layer=layer,
                train_fraction=float(d["train_fraction"]),
                seed=int(d["seed"]),
                primary_metric=str(d["primary_metric"]),
                metrics=metrics,
                bootstrap=bootstrap,
                probe=probe,
                counts=counts,
                classes=[str(c) for c in d["classes"]],
                multilabel=bool(d["multilabel"]),
                task_info=dict(d["task_info"]),
                cache=cache,
                extractor=dict(d["extractor"]),
                extractor_load=None if d["extractor_load"] is None else dict(d["extractor_load"]),
                prompt=None if d["prompt"] is None else str(d["prompt"]),
                config=dict(d["config"]),
                versions={str(k): None if v is None else str(v) for k, v in d["versions"].items()},
                output_dir=str(d["output_dir"]),
                overrides=[str(o) for o in d["overrides"]],
                notes=[str(n) for n in d["notes"]],
                timings_s={str(k): float(v) for k, v in d["timings_s"].items()},
                tracker=tracker,
                predictions_sha256=d.get("predictions_sha256"),
                job_key=d.get("job_key"),
                data=None if d.get("data") is None else dict(d["data"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"key {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
            raise ResultsError(f"{source}: malformed {key!r} ({what})") from None


def _upgrade_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 object in version-2 shape (see the module docstring)."""
    d = dict(d)
    if "task" in d:
        d.setdefault("task_kind", d["task"])
    if "model" in d:
        d.setdefault("model_kind", d["model"])
        d.setdefault("model_id", d["model"])
    for key, default in V1_DEFAULTS.items():
        head, _, sub = key.partition(".")
        if not sub:
            d.setdefault(head, default)
        elif isinstance(d.get(head), Mapping):
            d[head] = {**d[head]}
            d[head].setdefault(sub, default)
    return d


# ----------------------------------------------------------------------------- JSON files


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (``<path>.tmp`` then rename); the folder is
    created if needed.

    Non-finite floats become ``null`` (JSON has no NaN); numpy scalars and arrays become
    numbers and lists; paths strings. A reader never sees a half-written file.

    Raises:
        TypeError: a value that is none of these. OSError: the folder is not writable.
    """

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, np.floating) and not np.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(clean(obj), f, indent=2, default=_json_default)
    os.replace(tmp, path)
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        if (path.parent / "layers.json").is_file():  # a layer=all job: one folder per layer
            raise ResultsError(
                f"{path}: no such file: {path.parent} holds a layer=all job (layers.json); name "
                f"one of its layer folders ({path.parent}/layer_<L>)"
            ) from None
        raise ResultsError(f"{path}: no such file (not a medprobe run directory)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None


def write_results(out_dir: Path, results: Results) -> Path:
    """Write ``<out_dir>/results.json`` (atomic, NaN -> null); return its path."""
    return write_json(Path(out_dir) / RESULTS_FILE, results.to_json())


def read_results(path: str | Path) -> Results:
    """Read a run's ``results.json`` (``path`` is the run folder or the file itself).

    Returns:
        the :class:`Results`, with ``run_dir`` = the folder holding the file.

    Raises:
        ResultsError: no such file, invalid JSON, a newer schema, a missing or malformed key
            (one line naming the file).
    """
    p = Path(path)
    f = p if p.suffix == ".json" and not p.is_dir() else p / RESULTS_FILE
    d = _read_json(f)
    if not isinstance(d, dict):
        raise ResultsError(f"{f}: not a medprobe results file (not a JSON object)")
    return replace(Results.from_json(d, source=str(f)), run_dir=f.parent)


def _layer_order(layer: int | str) -> tuple[int, float, str]:
    """Integers numerically, then named layers alphabetically."""
    if isinstance(layer, int) and not isinstance(layer, bool):
        return (0, float(layer), "")
    return (1, 0.0, str(layer))


def find_results(dirs: Iterable[str | Path]) -> list[Results]:
    """Every ``results.json`` at or below each of ``dirs``, read with :func:`read_results`.

    Returns:
        sorted by (task, model, layer (integers numerically), train_fraction, seed, folder).

    Raises:
        ResultsError: a directory does not exist or holds no ``results.json``; a file that
            cannot be read.
    """
    out = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise ResultsError(f"{d}: no such directory")
        found = [d / RESULTS_FILE] if (d / RESULTS_FILE).is_file() else []
        found += sorted(p for p in d.rglob(RESULTS_FILE) if p.parent != d)
        if not found:
            raise ResultsError(f"{d}: no {RESULTS_FILE} at or below it")
        out += [read_results(p) for p in found]
    return sorted(
        out,
        key=lambda r: (r.task, r.model, _layer_order(r.layer), r.train_fraction, r.seed,
                       str(r.run_dir)),
    )  # fmt: skip


# ----------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Predictions:
    """A run's test predictions (``predictions.csv``).

    Attributes:
        ids: ``(n,)`` example ids (str), file order.
        split: ``(n,)`` split of each row (``"test"``).
        y: multiclass ``(n,)`` int64 class indices; multi-label ``(n, K)`` bool.
        proba: ``(n, K)`` float64 probabilities (``p_<class>`` columns; written with 6
            significant digits).
        classes: ``K`` class names.
        multilabel: layout of ``y``.
        groups: ``(n,)`` patient (or lesion) id of each row (the ``group`` column, written
            when the task has patient ids), or None: compare resamples patients when the
            runs have them (docs/statistics.md).
    """

    ids: list[str]
    split: list[str]
    y: np.ndarray
    proba: np.ndarray
    classes: list[str]
    multilabel: bool
    groups: list[str] | None = None

    def label_names(self, i: int) -> str:
        """Row ``i``'s label as written: a class name, ``|``-joined names if multi-label."""
        if self.multilabel:
            return "|".join(c for c, v in zip(self.classes, self.y[i], strict=True) if v)
        return self.classes[int(self.y[i])]

    def subset(self, order: np.ndarray) -> Predictions:
        """The rows ``order`` (int indices), in that order."""
        return Predictions(
            [self.ids[i] for i in order],
            [self.split[i] for i in order],
            self.y[order],
            self.proba[order],
            list(self.classes),
            self.multilabel,
            None if self.groups is None else [self.groups[i] for i in order],
        )


def write_predictions(out_dir: Path, preds: Predictions) -> Path:
    """Write ``<out_dir>/predictions.csv``: ``id, split, label, p_<class>...`` (6 significant
    digits), then ``group`` when ``preds.groups`` is set; return its path.

    Atomic (``.tmp`` then rename): a reader never sees half a file, and a job killed while
    writing leaves the previous file whole. Its sha256 (:func:`medprobe.hashing.file_sha256`)
    goes into results.json as ``predictions_sha256``.
    """
    path = Path(out_dir) / PREDICTIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = ["group"] if preds.groups is not None else []
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "split", "label", *[f"p_{c}" for c in preds.classes], *extra])
        for i, p in enumerate(preds.proba):
            g = [preds.groups[i]] if preds.groups is not None else []
            w.writerow([preds.ids[i], preds.split[i], preds.label_names(i),
                        *[f"{v:.6g}" for v in p], *g])  # fmt: skip
    os.replace(tmp, path)
    return path


def read_predictions(
    run_dir: str | Path,
    classes: Sequence[str],
    multilabel: bool,
    sha256: str | None = None,
) -> Predictions:
    """Read ``<run_dir>/predictions.csv`` for a run with ``classes`` (from its results).

    ``sha256``: the digest results.json recorded (``Results.predictions_sha256``); a file
    with another digest belongs to another job (two jobs given one folder, or a rerun killed
    between its two writes) and is refused, never compared.

    The optional ``group`` column (patient ids) becomes ``groups``; files without it (every
    file before issue 13, and tasks without patient ids) give ``groups=None``.

    Raises:
        ResultsError: no file, a missing ``p_<class>`` column, an unknown label or a repeated
            id (one line naming the file).
    """
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        if (Path(run_dir) / RESULTS_FILE).is_file():  # a run folder copied without it
            raise ResultsError(
                f"{Path(run_dir)}: {RESULTS_FILE} without its {PREDICTIONS_FILE} (a run folder "
                "copied in part?); the paired comparisons need the run's predictions: copy "
                "the file back or leave the run out"
            )
        raise ResultsError(f"{Path(run_dir)}: no {PREDICTIONS_FILE} (not a medprobe run directory)")
    if sha256 is not None:
        from medprobe.hashing import file_sha256

        if file_sha256(path) != sha256:
            raise ResultsError(
                f"{path} is not the predictions of {Path(run_dir) / RESULTS_FILE} (its sha256 "
                "differs from the one recorded): the folder mixes two jobs' files; rerun the job"
            )
    classes = list(classes)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [f"p_{c}" for c in classes if rows and f"p_{c}" not in rows[0]]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {missing}")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ResultsError(f"{path}: id {dup!r} occurs more than once")
    proba = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows], dtype=np.float64)
    proba = proba.reshape(len(rows), len(classes))
    index = {c: k for k, c in enumerate(classes)}
    try:
        if multilabel:
            y = np.zeros((len(rows), len(classes)), dtype=bool)
            for i, r in enumerate(rows):
                for name in filter(None, r["label"].split("|")):
                    y[i, index[name]] = True
        else:
            y = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    except KeyError as e:
        raise ResultsError(f"{path}: label {e.args[0]!r} not in {classes}") from None
    groups = [r["group"] for r in rows] if rows and "group" in rows[0] else None
    return Predictions(ids, [r["split"] for r in rows], y, proba, classes, multilabel, groups)


# ----------------------------------------------------------------------------- console


#: Share of far-from-square images (:data:`medprobe.data.images.FAR_FROM_SQUARE`) from which
#: :func:`run_notes` warns under ``model.resize=crop``.
FAR_FROM_SQUARE_NOTE = 0.1


def run_notes(results: Results, y_test: np.ndarray) -> list[str]:
    """Warnings worth a line under the console table (also kept in ``results.json``).

    Args:
        results: the run (its ``notes`` are ignored).
        y_test: the test labels, ``(n,)`` int class indices or ``(n, K)`` multi-hot.

    Returns:
        lines for: the task adapter's notes (``task_info["notes"]``: T3's image-level split,
        T7's skipped image files), unreadable images left out, a probe fit that did not
        converge, classes with 1 to ``stats.FEW_POSITIVES - 1`` (9) test positives (CI
        unreliable: docs/statistics.md, section 4), constant features, fewer than 200 bootstrap
        replicates, a share of at least :data:`FAR_FROM_SQUARE_NOTE` (10%) of the images far
        from square under ``model.resize=crop`` (``results.cache.far_from_square``).
    """
    from medprobe.stats import FEW_POSITIVES, few_positives

    notes: list[str] = []
    # the adapter's own warnings (task_info["notes"]), e.g. T3's image-level split
    notes += [str(n) for n in results.task_info.get("notes", [])]
    if results.counts.skipped_images:
        notes.append(f"{results.counts.skipped_images} unreadable image(s) left out "
                     "(data.on_error=skip; listed in results.json cache.skipped_images)")  # fmt: skip
    if not results.probe.converged:
        notes.append("the probe did not converge for some C (raise probe.max_iter)")
    few = [f"{c} ({n})" for c, n in few_positives(y_test, results.classes,
                                                  multilabel=results.multilabel)]  # fmt: skip
    if few:
        notes.append(f"fewer than {FEW_POSITIVES} test positives, CI unreliable: "
                     + ", ".join(few))  # fmt: skip
    if results.counts.constant_features:
        notes.append("this layer's features are identical for every image (e.g. CLIP layer 0's "
                     "CLS token is the class embedding): the probe can only predict the prior")  # fmt: skip
    if results.bootstrap.n < 200:
        notes.append(f"only {results.bootstrap.n} bootstrap replicates; CI bounds are rough")
    far = results.cache.far_from_square
    model_cfg = results.config.get("model") or {}
    if (
        far is not None
        and far >= FAR_FROM_SQUARE_NOTE
        and str(model_cfg.get("resize", "crop")) == "crop"
    ):
        notes.append(f"{far:.0%} of the images are far from square (aspect ratio >= 1.5): under "
                     "model.resize=crop the extractor's preprocessing may crop their borders "
                     "(EfficientNet, CLIP); model.resize=pad keeps every pixel")  # fmt: skip
    return notes


def format_table(results: Results) -> str:
    """Readable console table: per-class AUROC then summary metrics: value, CI (its method),
    bootstrap mean +- SD (the paper's Fig. 3-6 numbers), then the notes. The header names the
    resampling unit (images, or patients with their count)."""
    met = results.metrics
    level = int(round(100 * results.bootstrap.ci))
    c = results.counts
    head = (
        f"{results.task} | {results.model} | layer {results.layer} | "
        f"train_fraction {results.train_fraction} | seed {results.seed} | "
        f"rows: fit {c.fit}, val {c.val}, test {c.test}"
    )
    unit = met.resampling_unit + (
        f", {met.n_resampling_units} units" if met.n_resampling_units is not None else ""
    )
    lines = [
        head,
        f"{'metric':<28}{'value':>8}  {f'{level}% CI':<18}  {'method':<20}"
        f"boot mean +- SD (bootstrap n={results.bootstrap.n}, resampling unit: {unit})",
    ]
    keys = [k for k in met if k.startswith("auroc/")] + [
        k for k in ("auroc_macro", "f1_macro", "accuracy") if k in met
    ]
    for k in keys:
        v = met[k]
        interval = f"[{v.ci_low:.4f}, {v.ci_high:.4f}]"
        lines.append(f"{k:<28}{v.value:>8.4f}  {interval:<18}  {v.ci_method:<20}"
                     f"{v.boot_mean:.4f} +- {v.sd:.4f}")  # fmt: skip
    if met.absent_classes:
        why = "no positives or no negatives" if results.multilabel else "absent"
        lines.append(f"excluded, {why} in test: {', '.join(met.absent_classes)}")
    lines += [f"note: {n}" for n in results.notes]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- layer curve


@dataclass(frozen=True, kw_only=True)
class LayerPoint:
    """One layer of a ``layer=all`` job: the metric's value, SD and CI, the probe's
    validation score, and the folder of that layer's results (``dir``)."""

    layer: int | str
    value: float
    sd: float
    ci_low: float
    ci_high: float
    val_score: float
    dir: str


@dataclass(frozen=True, kw_only=True)
class LayerCurve:
    """``layers.json``: one metric of one model on one task, by layer.

    ``best_layer_by_validation`` is the layer with the best probe validation score (first
    maximum in layer order); the test set never picks it.
    """

    schema_version: int = SCHEMA_VERSION
    task: str
    task_kind: str
    model: str
    model_kind: str
    metric: str
    train_fraction: float
    seed: int
    layers: list[LayerPoint]
    best_layer_by_validation: int | str
    tracker: TrackerInfo | None = None
    #: the job's key (:attr:`Results.job_key`)
    job_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "layers":
                v = [{g.name: getattr(p, g.name) for g in fields(p)} for p in v]
            elif isinstance(v, TrackerInfo):
                v = {g.name: getattr(v, g.name) for g in fields(v)}
            out[f.name] = v
        return out


def layer_curve(runs: Sequence[Results], metric: str) -> LayerCurve:
    """The curve of ``metric`` over ``runs`` (one per layer, same task/model/fraction/seed,
    in layer order).

    Raises:
        ResultsError: no runs, runs of different identities, or ``metric`` missing.
    """
    if not runs:
        raise ResultsError("a layer curve needs at least one run")
    r0 = runs[0]
    ident = (r0.task, r0.model, r0.train_fraction, r0.seed)
    for r in runs:
        if (r.task, r.model, r.train_fraction, r.seed) != ident:
            raise ResultsError(f"a layer curve mixes runs: {ident} and "
                               f"{(r.task, r.model, r.train_fraction, r.seed)}")  # fmt: skip
        if metric not in r.metrics:
            raise ResultsError(f"layer {r.layer}: no metric {metric!r}")
    pts = [
        LayerPoint(layer=r.layer, value=r.metrics[metric].value, sd=r.metrics[metric].sd,
                   ci_low=r.metrics[metric].ci_low, ci_high=r.metrics[metric].ci_high,
                   val_score=r.probe.val_score, dir=r.output_dir)
        for r in runs
    ]  # fmt: skip
    best = max(range(len(pts)), key=lambda i: (pts[i].val_score, -i))  # first maximum
    return LayerCurve(
        task=r0.task, task_kind=r0.task_kind, model=r0.model, model_kind=r0.model_kind,
        metric=metric, train_fraction=r0.train_fraction, seed=r0.seed, layers=pts,
        best_layer_by_validation=pts[best].layer,
    )  # fmt: skip


def write_layer_curve(out_dir: Path, curve: LayerCurve) -> Path:
    """Write ``<out_dir>/layers.json`` (atomic, NaN -> null); return its path."""
    return write_json(Path(out_dir) / LAYERS_FILE, curve.to_json())


def read_layer_curve(path: str | Path) -> LayerCurve:
    """Read ``layers.json`` (``path``: the ``layer=all`` job's folder or the file).

    Files without ``schema_version`` (version 1) lack the kinds, seed and fraction: the kinds
    are read as the identities, seed and fraction from the first layer's ``results.json``.

    Raises:
        ResultsError: no such file, a newer schema, a missing or malformed key.
    """
    p = Path(path)
    f = p if p.suffix == ".json" and not p.is_dir() else p / LAYERS_FILE
    d = _read_json(f)
    try:
        version = d.get("schema_version", 1)
        if version > SCHEMA_VERSION:
            raise ResultsError(f"{f}: written with results schema {version}, newer than "
                               f"this medprobe reads ({SCHEMA_VERSION}); upgrade medprobe")  # fmt: skip
        pts = [
            LayerPoint(layer=x["layer"] if isinstance(x["layer"], int) else str(x["layer"]),
                       value=_float(x["value"]), sd=_float(x["sd"]), ci_low=_float(x["ci_low"]),
                       ci_high=_float(x["ci_high"]), val_score=_float(x["val_score"]),
                       dir=str(x["dir"]))
            for x in d["layers"]
        ]  # fmt: skip
        if version == 1 and ("seed" not in d or "train_fraction" not in d):
            first = read_results(f.parent / Path(pts[0].dir).name) if pts else None
            d.setdefault("seed", first.seed if first else 0)
            d.setdefault("train_fraction", first.train_fraction if first else 1.0)
        best = d["best_layer_by_validation"]
        return LayerCurve(
            task=str(d["task"]), task_kind=str(d.get("task_kind", d["task"])),
            model=str(d["model"]), model_kind=str(d.get("model_kind", d["model"])),
            metric=str(d["metric"]), train_fraction=float(d["train_fraction"]),
            seed=int(d["seed"]), layers=pts,
            best_layer_by_validation=best if isinstance(best, int) else str(best),
            tracker=TrackerInfo.from_json(d.get("tracker")), job_key=d.get("job_key"),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, ResultsError):
            raise
        what = f"no key {e.args[0]!r}" if isinstance(e, KeyError) else str(e)
        raise ResultsError(f"{f}: not a medprobe layer curve ({what})") from None


def format_layer_curve(curve: LayerCurve) -> str:
    """Console lines: ``<metric> by layer (<task> | <model>):`` then one line per layer with
    value and CI, the layer picked on validation marked."""
    lines = [f"{curve.metric} by layer ({curve.task} | {curve.model}):"]
    for p in curve.layers:
        mark = "  <- best on validation" if p.layer == curve.best_layer_by_validation else ""
        lines.append(f"  layer {p.layer!s:>7}  {p.value:.4f}  [{p.ci_low:.4f}, "
                     f"{p.ci_high:.4f}]{mark}")  # fmt: skip
    return "\n".join(lines)
