"""The ``hf`` task: any image-classification dataset read through Hugging Face ``datasets``.

``task.path`` is a Hub id (``org/name``: ``datasets.load_dataset`` downloads it once into its
cache, ``HF_DATASETS_CACHE``, like model weights) or a local folder: the output of
``save_to_disk`` (``datasets.load_from_disk``), or parquet files / an ``imagefolder``
(``datasets.load_dataset(folder)``, which recognises both, and their split names, from the
files). Relative folders are looked up under ``data_root`` too.

Columns (checked before anything else, each error naming the columns that exist):

* the image: ``task.image_column``, default the dataset's one ``Image`` column;
* the label: ``task.label_column`` (default ``label``): a ``ClassLabel`` (classes in its
  order, ``-1`` = no label), strings or integers (classes sorted), or a list of those per row
  (multi-label); or ``task.label_columns``: one 0/1 column per finding (multi-label);
* ``task.patient_column`` (optional): patient / group ids.

Splits: the dataset's own, mapped with ``task.splits`` (dataset split -> train/val/test;
default by name: ``train``; ``val``, ``valid``, ``validation``, ``dev``; ``test``,
``testing``; other splits are not used), or, with ``task.split_by=medprobe`` (automatic when
no split is used as test), a stratified, patient-level split of the rows of the used splits
(:func:`medprobe.data.tasks.common.stratified_split`). A patient on two sides is an error.

Images are never copied: each row's encoded bytes (or its file, for an imagefolder) are read
by :class:`HfImages` when the scan, the cache key or the extractor needs them. Example ids are
``<split>/<row>``; the manifest's ``paths`` are locators ``<dataset>:<split>[<row>]``.
The cache key's image part is the bytes of every selected row (``data.fingerprint=content``)
or the dataset's fingerprint (``datasets``' ``Dataset._fingerprint``) plus the selected rows
(``data.fingerprint=stat``).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.config.schema import HfTaskConfig, SplitBy, SplitRole
from medprobe.data.manifest import AutoSplit, Manifest, ManifestError
from medprobe.data.tasks.common import BadRows, make_manifest, stratified_split
from medprobe.data.tasks.csv_task import SPLIT_ALIASES
from medprobe.errors import ImageLoadError

if TYPE_CHECKING:
    from PIL import Image

#: A Hub dataset id: ``name`` or ``org/name`` (letters, digits, ``-``, ``_``, ``.``).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

#: Files in a folder written by ``save_to_disk`` (a DatasetDict, or one Dataset).
SAVED_MARKERS = ("dataset_dict.json", "state.json")

_LOCATOR = re.compile(r"^(?P<label>.*):(?P<split>[^:\[\]]+)\[(?P<row>\d+)\]$")


def locator(label: str, split: str, row: int) -> str:
    """``<dataset>:<split>[<row>]``: a row's image in messages and in the manifest's paths."""
    return f"{label}:{split}[{row}]"


class HfImages:
    """The images of a Hugging Face dataset, read row by row (an :class:`~medprobe.data.
    sources.ImageSource`).

    Args:
        label: the dataset as named in locators (its folder or Hub id).
        splits: split name -> ``datasets.Dataset`` (the rows as loaded).
        image_column: the ``Image`` column.

    An image cell holds the encoded bytes (save_to_disk, parquet, the Hub) or the path of a
    file (an imagefolder); bytes are decoded in memory
    (:func:`medprobe.data.images.load_image_bytes`), files read where they are
    (:func:`medprobe.data.images.load_image`). Nothing is written.
    """

    kind = "hf"

    def __init__(self, label: str, splits: dict[str, Any], image_column: str) -> None:
        self.label = label
        self.image_column = image_column
        # arrow format: a row's cell comes back as {"bytes", "path"} without decoding
        self.splits = {
            s: ds.with_format("arrow", columns=[image_column]) for s, ds in splits.items()
        }
        self.fingerprints = {s: str(ds._fingerprint) for s, ds in splits.items()}

    def _where(self, loc: str) -> tuple[str, int]:
        m = _LOCATOR.match(loc)
        if m is None or m["label"] != self.label or m["split"] not in self.splits:
            raise ValueError(f"not a row of {self.label}: {loc!r}")
        return m["split"], int(m["row"])

    def cell(self, loc: str) -> tuple[bytes | None, str | None]:
        """``(encoded bytes, file path)`` of a row's image; either may be None."""
        split, row = self._where(loc)
        value = self.splits[split][row].column(self.image_column)[0].as_py()
        if value is None:
            return None, None
        if isinstance(value, dict):
            return value.get("bytes"), value.get("path")
        if isinstance(value, bytes):  # a binary column cast to Image keeps raw bytes
            return value, None
        return None, str(value)

    def load(self, loc: str, max_side: int) -> Image.Image:
        from medprobe.data.images import load_image, load_image_bytes

        data, path = self.cell(loc)
        if data:
            return load_image_bytes(data, loc, max_side)
        if path and os.path.isfile(path):
            return load_image(path, max_side=max_side)
        if path:
            raise ImageLoadError(loc, f"image stored as a path that is not a local file: {path}")
        raise ImageLoadError(loc, "no image in this row (empty cell)")

    def digests(self, locators: Sequence[str], mode: str, workers: int) -> list[str]:
        from medprobe.hashing import bytes_digest, image_digest

        if mode == "stat":  # the library's fingerprint of the split; the row is in the id
            return [self.fingerprints[self._where(loc)[0]] for loc in locators]

        def one(loc: str) -> str:
            data, path = self.cell(loc)
            if data:
                return bytes_digest(data)
            return image_digest(path) if path else "missing"

        if workers <= 1:
            return [one(x) for x in locators]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, locators))

    def scan(
        self, locators: Sequence[str], *, max_side: int, max_workers: int, progress: bool
    ) -> list[tuple[str, str]]:
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        def check(loc: str) -> str | None:
            try:
                self.load(loc, max_side)
            except ImageLoadError as e:
                return e.reason
            return None

        locs = list(locators)
        with (
            ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool,
            tqdm(total=len(locs), desc="checking images", unit="img", disable=not progress) as bar,
        ):
            reasons = []
            for r in pool.map(check, locs):
                reasons.append(r)
                bar.update(1)
        return [(loc, r) for loc, r in zip(locs, reasons, strict=True) if r is not None]

    def far_from_square_share(self, locators: Sequence[str]) -> float | None:
        from medprobe.data.images import far_from_square_share

        def heads() -> Iterator[Any]:
            for loc in locators:
                data, path = self.cell(loc)
                yield io.BytesIO(data) if data else (path or "")

        return far_from_square_share(heads())


# ---------------------------------------------------------------------------------------------
# loading


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ManifestError(
            "task=hf needs the 'datasets' package: pip install datasets==5.2.0"
        ) from None
    return datasets


def _locate(given: str, data_root: str | None) -> tuple[str, Path | None]:
    """``(label, local folder or None for a Hub id)``.

    Raises:
        ManifestError: neither a folder nor a Hub id.
    """
    p = Path(given).expanduser()
    if p.is_dir():
        return str(p), p
    if not p.is_absolute() and data_root:
        q = Path(str(data_root)).expanduser() / p
        if q.is_dir():
            return str(q), q
    if p.exists():
        raise ManifestError(
            f"task.path={given}: a file; give the dataset's folder (save_to_disk output, "
            "parquet files or an imagefolder) or a Hub id"
        )
    if HUB_ID.match(given) and not given.startswith("."):
        return given, None
    raise ManifestError(
        f"task.path={given}: no such folder, and not a Hugging Face Hub dataset id (org/name)"
    )


def load_splits(cfg: HfTaskConfig, data_root: str | None = None) -> tuple[str, dict[str, Any], str]:
    """The dataset of ``task.path`` as ``(label, {split: datasets.Dataset}, format)``.

    ``format``: ``save_to_disk``, ``hub``, or what ``datasets`` recognised in a folder
    (``parquet``, ``imagefolder``, ...).

    Raises:
        ManifestError: no ``task.path``; not a folder nor a Hub id; a Hub dataset that is not
            in the local cache and cannot be downloaded (saying how to pre-download it); a
            folder ``datasets`` cannot read; ``task.revision`` with a local folder.
    """
    if not cfg.path:
        raise ManifestError(
            "task=hf needs task.path=<a Hugging Face Hub dataset id (org/name) or a local "
            "dataset folder>"
        )
    label, local = _locate(str(cfg.path), data_root)
    datasets = _import_datasets()
    if local is not None:
        if cfg.revision:
            raise ManifestError(
                f"task.revision={cfg.revision} applies to Hub ids only; task.path={label} is "
                "a local folder"
            )
        try:
            if any((local / m).is_file() for m in SAVED_MARKERS):
                obj, fmt = datasets.load_from_disk(str(local)), "save_to_disk"
            else:
                obj = datasets.load_dataset(str(local), name=cfg.config_name)
                fmt = ""
        except Exception as e:  # noqa: BLE001 (any failure of the library: one line, its type)
            empty = _empty_saved_splits(local)
            if empty:
                raise ManifestError(
                    f"task.path={label}: split(s) {', '.join(empty)} saved with 0 rows "
                    "(save_to_disk writes no data file for an empty split and datasets cannot "
                    "load it back); drop the empty split before save_to_disk"
                ) from None
            raise ManifestError(
                f"task.path={label}: datasets cannot read this folder as a dataset "
                f"({type(e).__name__}: {_first_line(e)}); expected save_to_disk output, parquet "
                "files or an imagefolder"
            ) from None
    else:
        fmt = "hub"
        try:
            obj = datasets.load_dataset(label, name=cfg.config_name, revision=cfg.revision)
        except ConnectionError as e:
            call = ", ".join(
                [repr(label)]
                + [
                    f"{k}={v!r}"
                    for k, v in (("name", cfg.config_name), ("revision", cfg.revision))
                    if v
                ]
            )
            raise ManifestError(
                f"task.path={label}: not a local folder, and as a Hugging Face Hub dataset it "
                f"is not in the local cache and cannot be downloaded here ({_first_line(e)}); "
                "pre-download it on a "
                f'machine with network: python -c "import datasets; '
                f'datasets.load_dataset({call})" with the same HF_HOME / HF_DATASETS_CACHE '
                "(then copy that cache here), or save it with save_to_disk and set task.path "
                "to that folder"
            ) from None
        except datasets.exceptions.DatasetNotFoundError as e:
            raise ManifestError(
                f"task.path={label}: not a local folder, and no such dataset on the Hugging "
                "Face Hub, or it is gated "
                f"or private (log in with `hf auth login`) ({_first_line(e)})"
            ) from None
        except Exception as e:  # noqa: BLE001 (e.g. a missing config name: the library's words)
            raise ManifestError(
                f"task.path={label}: {type(e).__name__}: {_first_line(e)}"
            ) from None
    if isinstance(obj, datasets.Dataset):
        splits = {str(obj.split) if obj.split else "train": obj}
    else:
        splits = dict(obj.items())
    if not splits:
        raise ManifestError(f"task.path={label}: the dataset has no splits")
    if not fmt:
        fmt = str(next(iter(splits.values())).info.builder_name or "folder")
    return label, splits, fmt


def _empty_saved_splits(folder: Path) -> list[str]:
    """The splits of a ``save_to_disk`` folder written without any data file (0 rows)."""
    import json

    try:
        names = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        parts = [(str(n), folder / str(n) / "state.json") for n in names]
    except (OSError, ValueError, KeyError, TypeError):
        parts = [("train", folder / "state.json")]
    empty = []
    for name, state in parts:
        try:
            if not json.loads(state.read_text()).get("_data_files"):
                empty.append(name)
        except (OSError, ValueError, AttributeError):
            continue
    return empty


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# the manifest


def _columns_error(label: str, what: str, name: str, columns: Sequence[str]) -> ManifestError:
    return ManifestError(f"{label}: unknown {what} {name!r} (columns: {', '.join(columns)})")


def _image_column(label: str, features: Any, given: str | None, datasets: Any) -> str:
    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    if given:
        if given not in features:
            raise _columns_error(label, "image column task.image_column", given, list(features))
        if not isinstance(features[given], datasets.Image):
            raise ManifestError(
                f"{label}: task.image_column={given!r} is not an Image column "
                f"({features[given]}); Image columns: {', '.join(images) or 'none'}"
            )
        return given
    if len(images) != 1:
        raise ManifestError(
            f"{label}: {'no' if not images else 'several'} Image columns "
            f"({', '.join(images) or 'columns: ' + ', '.join(features)}); "
            "set task.image_column"
        )
    return images[0]


def _inner(feature: Any, datasets: Any) -> Any | None:
    """The element feature of a list-valued column, else None."""
    if isinstance(feature, list):
        return feature[0] if feature else None
    if isinstance(feature, datasets.List | datasets.Sequence):
        return feature.feature
    return None


def _number(value: Any) -> Any:
    """A float label cell as the class it stands for: NaN -> None (no label; pandas writes a
    missing integer as NaN in a float column), a whole number -> int (``2.0`` is class ``2``);
    other values unchanged (a fractional float stays a float: not a class, a bad row)."""
    if isinstance(value, float | np.floating) and not isinstance(value, bool):
        if np.isnan(value):
            return None
        if float(value).is_integer():
            return int(value)
    return value


def _flag(value: Any) -> Any:
    """A ``task.label_columns`` cell: as :func:`_number`, and the strings ``"0"`` / ``"1"`` (a
    CSV read as text) as 0 / 1, an empty string as None (no label); else unchanged."""
    if isinstance(value, str):
        text = value.strip()
        return None if not text else int(text) if text in ("0", "1") else value
    return _number(value)


def _fraction(value: Any) -> bool:
    """A float cell that is not a whole number (``0.5``, ``inf``): no class label."""
    return isinstance(value, float | np.floating) and not float(value).is_integer()


def _kind(feature: Any, datasets: Any) -> tuple[Any, ...]:
    """What decides how a label / patient cell is read: ClassLabel (with its names), a list
    (of what), or a plain value (int64 and int32, string and large_string alike)."""
    inner = _inner(feature, datasets)
    if inner is not None:
        return ("list", _kind(inner, datasets))
    if isinstance(feature, datasets.ClassLabel):
        return ("ClassLabel", tuple(feature.names))
    return (type(feature).__name__,)


def _names(feature: Any, values: list[Any], datasets: Any, classes: list[str] | None) -> list[str]:
    """Class order: ``task.classes``, else the ClassLabel's names, else the sorted values
    (numerically when they are integers)."""
    if classes:
        if len(set(classes)) != len(classes):
            raise ManifestError(f"task.classes has duplicates: {classes}")
        return list(classes)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    found = {v for v in map(_number, values) if v is not None and v != "" and not _fraction(v)}
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in found):
        return [str(v) for v in sorted(found)]
    return sorted(str(v) for v in found)


def _as_name(feature: Any, value: Any, datasets: Any) -> str | None:
    """A label cell as a class name; None = no label (ClassLabel -1, None, NaN, empty)."""
    value = _number(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(feature, datasets.ClassLabel):
        if int(value) < 0:
            return None
        return str(feature.int2str(int(value)))
    return str(value).strip()


def build_manifest(task_cfg: HfTaskConfig, data_root: str | None = None) -> Manifest:
    """Manifest of a Hugging Face dataset from the ``task`` config node (module docstring).

    Returns:
        the manifest, with :class:`HfImages` as its image source; ``labels`` (n,) int64 or
        (n, K) uint8 multi-hot; ``info``: dataset, format, revision, config_name, fingerprints
        per split, the split mapping, split_source, skipped rows.

    Raises:
        ManifestError: as :func:`load_splits`; an unknown column (naming the columns), an
            unknown split in ``task.splits`` (naming the splits), no split used as test with
            ``split_by=dataset``, a used split without any label, a bad row under
            ``on_bad_row=stop``, a patient in two splits.
    """
    datasets = _import_datasets()
    label, splits, fmt = load_splits(task_cfg, data_root)
    names = list(splits)

    # which splits, as what
    if task_cfg.splits:
        if not isinstance(task_cfg.splits, Mapping):
            raise ManifestError(
                f"task.splits must map dataset splits to train/val/test, got {task_cfg.splits!r}"
            )
        for s in task_cfg.splits:
            if s not in splits:
                raise ManifestError(
                    f"task.splits: {label} has no split {s!r} (its splits: {', '.join(names)})"
                )
        roles: dict[str, str | None] = {}
        for s, r in dict(task_cfg.splits).items():
            try:
                roles[str(s)] = str(SplitRole(str(r)))
            except ValueError:
                raise ManifestError(
                    f"task.splits: {s}: {r!r} is not one of {', '.join(SplitRole)}"
                ) from None
    else:
        roles = {s: SPLIT_ALIASES[s.lower()] for s in names if s.lower() in SPLIT_ALIASES}
        if not roles:
            roles = dict.fromkeys(names)  # nothing recognised: all rows, split by medprobe
    split_by = str(task_cfg.split_by)
    if split_by == str(SplitBy.auto):
        split_by = "dataset" if "test" in roles.values() else "medprobe"
    if split_by == "dataset" and "test" not in roles.values():
        raise ManifestError(
            f"task.split_by=dataset: no split of {label} is used as test (its splits: "
            f"{', '.join(names)}); map one with task.splits={{<split>: test, ...}} or use "
            "task.split_by=medprobe"
        )

    # columns, checked on every used split
    first = splits[next(iter(roles))]
    features = first.features
    image_col = _image_column(label, features, task_cfg.image_column, datasets)
    label_cols = list(task_cfg.label_columns or [])
    wanted = [image_col, *(label_cols or [task_cfg.label_column])]
    if task_cfg.patient_column:
        wanted.append(task_cfg.patient_column)
    for s in roles:
        cols = list(splits[s].features)
        for c in wanted:
            if c not in cols:
                what = (
                    "image column"
                    if c == image_col
                    else "patient column task.patient_column"
                    if c == task_cfg.patient_column
                    else "label column"
                )
                raise _columns_error(f"{label}:{s}", what, c, cols)
            if c != image_col and _kind(splits[s].features[c], datasets) != _kind(
                features[c], datasets
            ):
                # labels are read by the first used split's type (ClassLabel ids vs names)
                raise ManifestError(
                    f"{label}: column {c!r} is {features[c]} in split {next(iter(roles))!r} "
                    f"but {splits[s].features[c]} in split {s!r}; give it one type in every "
                    "used split (e.g. cast_column) or leave a split out with task.splits"
                )
    if label_cols and task_cfg.classes:
        raise ManifestError(
            "task.classes does not apply with task.label_columns (the columns are the classes)"
        )

    bad = BadRows(str(task_cfg.on_bad_row))
    ids: list[str] = []
    locs: list[str] = []
    raw: list[list[str] | list[int]] = []
    roles_of_rows: list[str | None] = []
    groups: list[str] = []
    feature = features[task_cfg.label_column] if not label_cols else None
    inner = _inner(feature, datasets) if feature is not None else None
    multilabel = bool(label_cols) or inner is not None
    element = inner if inner is not None else feature
    checks = [(f"task.label_column={task_cfg.label_column!r}", element)] if not label_cols else []
    checks += [(f"task.label_columns: {c!r}", features[c]) for c in label_cols]
    if task_cfg.patient_column:
        checks.append(
            (f"task.patient_column={task_cfg.patient_column!r}", features[task_cfg.patient_column])
        )
    for key, f in checks:  # an image or a record is no class name nor patient id
        if not isinstance(f, datasets.Value | datasets.ClassLabel):
            raise ManifestError(
                f"{label}: {key} is a column of {f} values, not class names / integers / ids "
                f"(columns: {', '.join(f'{c} ({features[c]})' for c in features)})"
            )
    columns: dict[str, dict[str, list[Any]]] = {}
    for s in roles:
        ds = splits[s]
        need = label_cols or [task_cfg.label_column]
        if task_cfg.patient_column:
            need = [*need, task_cfg.patient_column]
        columns[s] = {c: list(ds[c]) for c in need}
    # label names from every used split's values
    if label_cols:
        classes = list(label_cols)
    else:
        values: list[Any] = []
        for s in roles:
            for v in columns[s][task_cfg.label_column]:
                values.extend((v or []) if multilabel else [v])
        if isinstance(element, datasets.ClassLabel):
            values = []
        classes = _names(element, values, datasets, list(task_cfg.classes or []) or None)
    index = {c: k for k, c in enumerate(classes)}

    per_split: dict[str, list[list[str] | list[int] | tuple[str, str] | None]] = {}
    for s in roles:  # every row: None = no label, (why, kind) = its label is bad
        col = columns[s]
        row_labels: list[list[str] | list[int] | tuple[str, str] | None] = []
        if label_cols:
            for i in range(len(splits[s])):
                vals = [_flag(col[c][i]) for c in label_cols]
                if any(v is None for v in vals):
                    row_labels.append(None)
                elif any(v not in (0, 1) for v in vals):
                    row_labels.append(
                        (f"values {vals} of {label_cols} are not 0/1", "label not 0/1")
                    )
                else:
                    row_labels.append([int(v) for v in vals])
        else:
            for v in col[task_cfg.label_column]:
                frac = [t for t in ((v or []) if multilabel else [v]) if _fraction(_number(t))]
                if frac:
                    row_labels.append(
                        (f"label {frac[0]!r} is not a class (a fractional number)", "bad label")
                    )
                elif multilabel:
                    names_ = [_as_name(element, t, datasets) for t in (v or [])]
                    row_labels.append(None if v is None else [t for t in names_ if t is not None])
                else:
                    t = _as_name(element, v, datasets)
                    row_labels.append(None if t is None else [t])
        if row_labels and all(r is None for r in row_labels):
            raise ManifestError(
                f"{label}:{s}: no row has a label in {label_cols or task_cfg.label_column!r} "
                "(hidden test labels?); leave this split out with task.splits={...} or "
                "map another split to test"
            )
        per_split[s] = row_labels

    for s, role in roles.items():
        col = columns[s]
        where = f"{label}:{s}"
        for i, cell in enumerate(per_split[s]):
            if cell is None:
                bad(where, i, "no label", "no label")
                continue
            if isinstance(cell, tuple):
                bad(where, i, *cell)
                continue
            if not label_cols:
                unknown = [t for t in cell if t not in index]
                if unknown:
                    bad(
                        where,
                        i,
                        f"unknown label {unknown[0]!r}; known: {', '.join(classes)}",
                        "unknown label",
                    )
                    continue
            ids.append(f"{s}/{i}")
            locs.append(locator(label, s, i))
            raw.append(cell)
            roles_of_rows.append(role)
            if task_cfg.patient_column:
                g = _number(col[task_cfg.patient_column][i])  # NaN: no patient id
                groups.append("" if g is None else str(g).strip())

    if multilabel:
        labels = np.zeros((len(ids), len(classes)), dtype=np.uint8)
        for r, cell in enumerate(raw):
            if label_cols:
                labels[r] = np.asarray(cell, dtype=np.uint8)
            else:
                labels[r, [index[str(t)] for t in cell]] = 1
    else:
        labels = np.array([index[str(cell[0])] for cell in raw], dtype=np.int64)
    group_arr = np.array(groups, dtype=object) if task_cfg.patient_column else None

    info: dict[str, Any] = {
        "source": "hf",
        "dataset": label,
        "format": fmt,
        "config_name": task_cfg.config_name,
        "revision": task_cfg.revision,
        "fingerprints": {s: str(splits[s]._fingerprint) for s in roles},
        "dataset_splits": {s: len(ds) for s, ds in splits.items()},
        "image_column": image_col,
        "label_column": label_cols or task_cfg.label_column,
        "grouped": group_arr is not None,
        **bad.info(),
    }
    if split_by == "dataset":
        split = np.array(roles_of_rows, dtype=object)
        info["splits"] = {s: r for s, r in roles.items()}
        info["split_source"] = "dataset splits " + ", ".join(f"{s}->{r}" for s, r in roles.items())
    else:
        if not ids:
            split = np.array([], dtype=object)
        else:
            strata = labels
            split, desc = stratified_split(strata, group_arr, task_cfg, ids=ids)
            info["split_source"] = f"{desc} of dataset split(s) {', '.join(roles)}"
        info["splits"] = dict.fromkeys(roles, "medprobe")
    manifest = make_manifest(
        task_cfg.kind,  # bootstrap replicates stay seeded by the adapter kind (as task=csv)
        Path(label),
        [(i, Path(p)) for i, p in zip(ids, locs, strict=True)],
        labels,
        classes,
        split,
        group_arr,
        info,
        multilabel=multilabel,
        where=label,
    )
    info["root"] = label
    manifest.source = HfImages(label, {s: splits[s] for s in roles}, image_col)
    if split_by != "dataset":
        # medprobe's split is a function of (ids, patients, labels, seed) only (issue 16.5), and
        # is made again on the rows left when data.on_error=skip leaves images out
        manifest.auto_split = AutoSplit(
            float(task_cfg.val_fraction), float(task_cfg.test_fraction), int(task_cfg.split_seed)
        )
    return manifest
