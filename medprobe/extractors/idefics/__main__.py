"""``python -m medprobe.extractors.idefics plan|memory ...``: the module form of ``medprobe plan``.

``plan ARGS`` runs :func:`medprobe.extractors.idefics.plan.main` on ``ARGS``; ``memory ARGS``
runs it with ``--memory-table``. A :class:`~medprobe.errors.MedprobeError` is printed as one
line ``medprobe: error: ...`` with exit status 2, as the ``medprobe`` console script does.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from medprobe.errors import ConfigError, MedprobeError
from medprobe.extractors.idefics.plan import main as plan_main

USAGE = (
    "usage: python -m medprobe.extractors.idefics {plan,memory} ...\n"
    "  plan    where each module goes for a max_memory (medprobe plan --help)\n"
    "  memory  weight memory, full vs truncated, per quantisation (medprobe plan --memory-table)"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``plan`` / ``memory`` (see the module docstring); returns the exit status.

    Raises:
        ConfigError: no command or an unknown one; what ``plan`` raises.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "plan":
        return plan_main(rest)
    if command == "memory":
        return plan_main(["--memory-table", *rest])
    if command in ("-h", "--help"):
        print(USAGE)
        return 0
    raise ConfigError(
        f"python -m medprobe.extractors.idefics: choose a command, plan or memory, got "
        f"{command or 'none'} (see --help)"
    )


if __name__ == "__main__":
    from medprobe.cli import report_error

    try:
        status = main()
    except MedprobeError as exc:  # one line, as the medprobe console script prints it
        report_error(str(exc))
        status = 2
    raise SystemExit(status)
