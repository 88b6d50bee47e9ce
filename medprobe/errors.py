"""Every user mistake medprobe reports is a :class:`MedprobeError`.

The console script (:mod:`medprobe.cli`) prints one as the single line
``medprobe: error: <message>`` and exits with status 2, whichever way medprobe was launched
(``python -m medprobe``, the installed ``medprobe`` script, torchrun, accelerate launch).
Anything that is not a ``MedprobeError`` is a bug and keeps its traceback. Errors are told
apart by their class, never by their message text.

This module imports nothing from medprobe, so every module can import it.
"""

from __future__ import annotations

import os


class MedprobeError(Exception):
    """Base of every user-facing error; ``str()`` is one readable line (or a short list)."""


class ConfigError(MedprobeError, ValueError):
    """A config value that passed the schema but is invalid (one readable line)."""


class RegistryError(ConfigError, KeyError):
    """Unknown or duplicate registry name (model kind, task kind, probe). One line."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(MedprobeError, ValueError):
    """Bad task input: label files, image files, splits."""


class ManifestError(DataError):
    """Bad task input: one line naming the file (and row) at fault."""


class ImageLoadError(DataError):
    """A file that cannot be loaded as a complete image.

    Attributes:
        path: the file's path, as given (``str``).
        reason: one line saying why (missing, empty, not an image, truncated, ...).

    ``str(err)`` is the single line ``"<path>: <reason>"``. Picklable (safe across processes).
    Built from one message (``reason=None``), as a DataLoader worker's exception is rebuilt in
    the main process, ``str(err)`` is that message, so the class survives the trip.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str | None = None) -> None:
        self.path = os.fspath(path)
        self.reason = None if reason is None else " ".join(str(reason).split())  # one line
        super().__init__(self.path, self.reason)

    def __str__(self) -> str:
        return self.path if self.reason is None else f"{self.path}: {self.reason}"


class BadImagesError(DataError):
    """Unreadable images found before (or during) extraction; the message lists every one."""


class ExtractorError(MedprobeError, ValueError):
    """A user-facing extractor problem (bad layer, missing weights, non-finite features)."""


class NonFiniteFeaturesError(ExtractorError):
    """A batch's features hold NaN/inf.

    Attributes:
        layer: the layer; rows: the offending rows of the batch (0-based), so the features
            stage can name their images.
    """

    def __init__(self, message: str, layer: object, rows: list[int]) -> None:
        super().__init__(message)
        self.layer = layer
        self.rows = list(rows)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.layer, self.rows))


class CacheError(MedprobeError, RuntimeError):
    """A user-facing cache problem; the message is one line naming the key, file or layer."""


class ProbeError(MedprobeError, ValueError):
    """The probe cannot be fitted or selected on these rows (one readable line)."""


class DistributedError(MedprobeError, RuntimeError):
    """A data-parallel collective failed: a peer stopped, or the wait timed out (one line)."""


class StorageError(MedprobeError, OSError):
    """A path that cannot be created, written or read (a file where a folder should be, no
    permission, disk full): one line naming the path and the reason."""


def storage_error(e: OSError) -> StorageError:
    """``e`` as one :class:`StorageError` line: ``<path>: <reason>``."""
    where = e.filename if e.filename is not None else "?"
    if isinstance(e, FileExistsError) and os.path.isfile(where):  # mkdir of a file's path
        return StorageError(f"{where}: is a file, not a folder")
    if isinstance(e, NotADirectoryError):
        return StorageError(f"{where}: {e.strerror or e} (a part of the path is a file)")
    return StorageError(f"{where}: {e.strerror or e}")


class ComparisonError(MedprobeError, ValueError):
    """Runs that cannot be compared (different test ids, labels, classes or tasks)."""


class ResultsError(MedprobeError, ValueError):
    """A run folder whose ``results.json`` / ``predictions.csv`` cannot be read as results."""


class McqError(MedprobeError, ValueError):
    """A user mistake in a case file, an output folder or the options (one-line message)."""
