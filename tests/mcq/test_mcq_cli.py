"""``medprobe mcq`` arguments: required ones marked in --help, mistakes are MedprobeErrors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, isolated_env

from medprobe.errors import ConfigError, McqError
from medprobe.mcq import build_parser, evaluate, main


def test_help_names_the_required_arguments() -> None:
    text = build_parser().format_help()
    required = text.split("required arguments:")[1]
    assert all(f"--{a} " in required for a in ("model", "cases", "out"))
    assert text.startswith("usage: medprobe mcq [-h] --model MODEL --cases CASES --out OUT")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "m", "--cases", "c"],
         "medprobe mcq: the following arguments are required: --out (see medprobe mcq --help)"),
        (["--model", "m", "--cases", "c", "--out", "o", "--mode", "best"],
         "medprobe mcq: argument --mode: invalid choice: 'best' (choose from 'greedy', "
         "'sample', 'loglik', 'all') (see medprobe mcq --help)"),
    ],
)  # fmt: skip
def test_argument_mistakes_raise_config_error(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        main(argv)
    assert str(e.value) == message


def test_unknown_mode_is_an_mcq_error(tmp_path: Path) -> None:
    with pytest.raises(McqError, match="unknown mode 'best'; valid: \\['greedy', 'sample', 'loglik'\\]"):  # fmt: skip
        evaluate(None, tmp_path / "cases.jsonl", tmp_path, modes=["greedy", "best"])  # type: ignore[arg-type]


def test_python_m_reports_a_mistake_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "medprobe.mcq", "--model", "m"], cwd=REPO,
                       env=isolated_env(tmp_path), capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr == (
        "medprobe: error: medprobe mcq: the following arguments are required: --cases, --out "
        "(see medprobe mcq --help)\n"
    )
