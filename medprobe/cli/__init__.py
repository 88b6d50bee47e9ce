"""The one console script: ``medprobe <subcommand> ...`` (also ``python -m medprobe ...``).

``medprobe run`` is the Hydra app and the default: ``medprobe task=t5 model=idefics80b`` and
``python -m medprobe task=t5 model=idefics80b`` are ``medprobe run task=t5 model=idefics80b``.
The other subcommands are thin argparse front ends of their modules.

Every user mistake is a :class:`medprobe.errors.MedprobeError` and ends here as the single
line ``medprobe: error: <message>`` on stderr with exit status 2, however medprobe was
launched (console script, ``python -m``, torchrun, accelerate launch). In a data-parallel job
every process reports its own error, tagged with its rank.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence

from medprobe.errors import MedprobeError, storage_error

#: subcommand -> ("module:function", argv prefix, one-line help). Each function takes the
#: arguments after the subcommand and returns an exit status.
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "run": ("medprobe.cli.run:main", (), "probe a model on a task: Hydra overrides (the default)"),
    "data": ("medprobe.cli.data:main", (), "check a task's data before any GPU time (no model)"),
    "compare": ("medprobe.compare:main", (), "paired tests between run folders"),
    "report": ("medprobe.report:main", (), "tables and figures from run and sweep folders"),
    "mcq": ("medprobe.mcq:main", (), "few-shot multiple-choice answering of NEJM-style cases"),
    "cache": ("medprobe.cli.cache:main", (), "list, verify and prune the feature cache"),
    "dashboard": ("medprobe.dashboard:main", (), "save a W&B workspace and report comparing runs"),
    "plan": (
        "medprobe.extractors.vlm.plan:main",
        (),
        "memory plan of a VLM or IDEFICS model=<name>; IDEFICS device plan (no weights, no GPU)",
    ),
}


def usage() -> str:
    """The subcommand overview printed by ``medprobe help``."""
    width = max(map(len, COMMANDS))
    lines = ["usage: medprobe [run] [overrides ...] | medprobe <subcommand> [--help] ...", ""]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    lines += [
        "",
        "medprobe --help         the run subcommand's options (Hydra config groups)",
        "medprobe <cmd> --help   a subcommand's arguments (required ones are marked)",
    ]
    return "\n".join(lines)


def rank() -> int:
    """This process's rank in a data-parallel launch (0 outside one)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def report_error(message: str) -> None:
    """Print a user error as ``medprobe: error: ...``.

    In a data-parallel job every process prints (the error may be only its own, e.g. an image
    in its shard), tagged with its rank; the others wait a moment so that rank 0's line is not
    lost when the launcher stops them.
    """
    r = rank()
    message = " ".join(message.split()) if "\n" not in message.strip() else message.strip()
    if r == 0:
        print(f"medprobe: error: {message}", file=sys.stderr, flush=True)
        return
    if not message.startswith(f"rank {r}/"):
        message = f"[rank {r}] {message}"
    print(f"medprobe: error: {message}", file=sys.stderr, flush=True)
    time.sleep(1.0)


def _command(name: str) -> Callable[[Sequence[str]], int]:
    target, prefix, _ = COMMANDS[name]
    module, attr = target.split(":")
    fn = getattr(importlib.import_module(module), attr)
    return lambda argv: fn([*prefix, *argv])


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) and exit with the subcommand's status.

    A first argument that names a subcommand selects it; anything else (overrides, ``-m``,
    ``--help``, ``--cfg job``) goes to ``run``. ``medprobe help`` lists the subcommands.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("help", "commands"):
        print(usage())
        raise SystemExit(0)
    if args and args[0] == "--version":
        from medprobe import __version__

        print(f"medprobe {__version__}")
        raise SystemExit(0)
    if args and "=" not in args[0] and not args[0].startswith("-") and args[0] not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(args[0], list(COMMANDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        report_error(f"unknown subcommand '{args[0]}'{hint} (medprobe help lists them; a run "
                     "takes overrides key=value)")  # fmt: skip
        raise SystemExit(2)
    name = args.pop(0) if args and args[0] in COMMANDS else "run"
    try:
        status = _command(name)(args)
    except MedprobeError as e:  # a user mistake: one line, no traceback
        report_error(str(e))
        raise SystemExit(2) from None
    except BrokenPipeError:  # whoever read stdout went away (medprobe --help | head): quietly,
        # with stdout pointed at /dev/null so that the interpreter's final flush stays silent
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        raise SystemExit(141) from None  # 128 + SIGPIPE, as a shell tool killed by it
    except OSError as e:  # a path that cannot be written or read: one line naming it
        report_error(str(storage_error(e)))
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if rank() == 0:
            print("medprobe: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    raise SystemExit(status or 0)
