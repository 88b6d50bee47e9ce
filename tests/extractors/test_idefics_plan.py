"""The plan command line: ``medprobe plan ...`` (:func:`medprobe.extractors.idefics.plan.main`,
the arguments after ``plan``) and its module form ``python -m medprobe.extractors.idefics
plan|memory ...``. Placement itself: test_idefics_placement.py."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re
import shlex
from pathlib import Path

import pytest
from helpers import REPO, run_medprobe

from medprobe.errors import ConfigError, ExtractorError, MedprobeError
from medprobe.extractors.idefics import main
from medprobe.extractors.idefics.__main__ import main as module_main
from medprobe.extractors.idefics.plan import build_parser

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")
MOD = "medprobe.extractors.idefics"


def test_plan_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "idefics80b", "--max-memory", "0=80GiB"]) == 0
    out = capsys.readouterr().out
    assert "layer 32: 32 of 80 decoder blocks (truncated)" in out and "65.5 GB" in out
    assert main(["--max-memory", "0=24GiB", "--strict"]) == 1  # spills
    assert main(["--model", "idefics9b", "--memory-table"]) == 0
    out = capsys.readouterr().out
    assert "layer 13" in out and "none              17.9        9.9  16/32" in out
    assert main(["--model", "idefics9b", "--max-memory", "0=24GiB", "--json"]) == 0
    assert '"depth": 16' in capsys.readouterr().out
    # the module form: "plan ARGS" and "memory ARGS" (= --memory-table)
    assert module_main(["memory", "--model", "idefics9b"]) == 0
    assert "none              17.9        9.9  16/32" in capsys.readouterr().out
    assert module_main(["plan", "--max-memory", "0=24GiB", "--strict"]) == 1


def test_plan_mistakes_raise_one_medprobe_error_and_print_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv, err, msg in (
        (["--model", "idefics70b", "--max-memory", "0=80GiB"], ExtractorError, "unknown model"),
        (["--max-memory", "0=80"], ExtractorError, "not bytes nor a size"),
        (["--max-memory", "0:80GiB,1:80GiB"], ExtractorError, "is not DEVICE=SIZE"),
        (["--layer", "81", "--max-memory", "0=80GiB"], ExtractorError, "unknown layer"),
        ([], ConfigError, "needs --max-memory"),
        (["--quantization", "2bit", "--max-memory", "0=80GiB"], ConfigError, "invalid choice"),
        (["--max-memory"], ConfigError, "expected one argument"),
        (["--model", "/no/such/dir", "--memory-table"], ExtractorError, "unknown model"),
    ):
        with pytest.raises(err, match=re.escape(msg)) as info:
            main(argv)
        assert "\n" not in str(info.value), argv
        assert capsys.readouterr() == ("", ""), argv  # printing is the console script's job
    with pytest.raises(ConfigError, match="choose a command, plan or memory"):
        module_main(["plna"])
    assert issubclass(ConfigError, MedprobeError) and issubclass(ExtractorError, MedprobeError)


def test_help_says_which_arguments_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: medprobe plan")
    assert "--max-memory DEVICE=SIZE,... required for a plan (not for --memory-table)" in text
    assert build_parser().prog == "medprobe plan"


def test_python_m_plan_runs_as_a_module(tmp_path: Path) -> None:
    ok = run_medprobe(tmp_path, "plan", "--layer", "32", "--max-memory", "0=80GiB", module=MOD)
    assert "0-31" in ok.stdout and "65.5 GB" in ok.stdout and ok.stderr == ""
    for args, msg in (
        (("plan", "--model", "nope", "--max-memory", "0=80GiB"), "unknown model 'nope'"),
        (("plan", "--quantization", "2bit", "--max-memory", "0=80GiB"), "invalid choice"),
        (("plan",), "needs --max-memory"),
    ):
        bad = run_medprobe(tmp_path, *args, module=MOD, check=False)
        assert bad.returncode == 2 and bad.stdout == "", args
        assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("medprobe: error: "), args
        assert msg in bad.stderr, bad.stderr


def test_the_plans_printed_in_the_docs_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    """Every complete plan output in docs/idefics.md is what the command prints today."""
    doc = (REPO / "docs" / "idefics.md").read_text()
    blocks = re.findall(r"```\n\$ medprobe (plan [^\n]*)\n(.*?)```", doc, re.S)
    complete = [(cmd, out) for cmd, out in blocks if "\n...\n" not in out]
    assert len(complete) == 4  # (i) 4 x 48 GB, (ii) 80 GB, (iii) 2 x 24 GB 4-bit, (iv) 9B
    for cmd, expected in complete:
        assert module_main(shlex.split(cmd)) == 0
        assert capsys.readouterr().out.strip() == expected.strip(), cmd
