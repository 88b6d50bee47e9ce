"""What every ``medprobe`` subcommand shares: an argparse parser whose mistakes are
:class:`medprobe.errors.ConfigError` (printed once, as ``medprobe: error: ...``, exit 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from medprobe.errors import ConfigError


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that raises :class:`ConfigError` instead of exiting.

    A bad option value (``report --metric auc``) or a missing required argument becomes one
    line naming the subcommand, e.g. ``medprobe report: argument --metric: invalid choice:
    'auc' (choose from ...)``. ``--help`` still prints and exits 0.
    """

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def folder(text: str) -> Path:
    """An argparse ``type`` for an output folder: the path, refusing an empty string.

    ``--out ''`` (an unset shell variable, ``--out "$OUT"``) would otherwise be ``Path('.')``
    and write into the current folder.

    Raises:
        argparse.ArgumentTypeError: an empty or blank value (argparse names the option).
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; give a folder")
    return Path(text)
