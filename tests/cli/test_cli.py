"""One console script, one error path: ``medprobe <subcommand>`` and ``python -m medprobe``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import isolated_env, run_medprobe

from medprobe.cli import COMMANDS
from medprobe.cli.run import _one_line


def _script(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``medprobe`` console script (beside this interpreter), as a user runs it."""
    exe = Path(sys.executable).parent / "medprobe"
    if not exe.exists():
        pytest.skip(f"console script not installed beside {sys.executable}")
    return subprocess.run([str(exe), *args], cwd=tmp, env=isolated_env(tmp),
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["model=nope"],
            "medprobe: error: In 'config': Could not find 'model/nope'; available "
            "options in 'model': biomedclip clip dinov2_base effnet_lite0 idefics3_8b "
            "idefics80b idefics9b internvl3_8b llama32_vision_11b llava_onevision_7b "
            "medgemma_4b paligemma2_3b phikon plip qwen2_5_vl_7b rad_dino siglip2_base "
            "siglip_base smolvlm_2b uni virchow2",
        ),  # fmt: skip
        (
            ["tracker.mode=loud"],
            "medprobe: error: Error merging override tracker.mode=loud: "
            "Invalid value 'loud', expected one of [auto, online, offline, disabled]",
        ),  # fmt: skip
        (
            ["nokey=1"],
            "medprobe: error: Could not override 'nokey'. To append to your config "
            "use +nokey=1: Key 'nokey' not in 'Config(model, task, prompt, probe, tracker, data, "
            "cache, bootstrap, cluster, layer, train_fraction, seed, data_root, cache_dir, output_dir, "
            "overwrite, overrides, sweep_group, progress, dist_timeout_min)'",
        ),  # fmt: skip
    ],
)
def test_composition_errors_are_one_line_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    for proc in (run_medprobe(tmp_path, *args, check=False),
                 run_medprobe(tmp_path, "run", *args, check=False)):  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [message]


def test_installed_script_takes_the_same_error_path(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    proc = _script(tmp_path, f"output_dir={tmp_path / 'afile'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"medprobe: error: output_dir={tmp_path / 'afile'}: {tmp_path / 'afile'} is a file, "
        "not a folder"
    ]


def test_help_lists_every_subcommand(tmp_path: Path) -> None:
    proc = run_medprobe(tmp_path, "help")
    for name in COMMANDS:
        assert f"\n  {name} " in proc.stdout
    assert set(COMMANDS) == {
        "run", "data", "compare", "report", "mcq", "plan", "cache", "dashboard"
    }  # fmt: skip


def test_one_line_flattens_hydra_messages() -> None:
    class Cause(Exception):
        pass

    e = ValueError("Error merging override a=b")
    e.__cause__ = Cause("Invalid value 'b'\n    full_key: a\n    object_type=Config")
    assert _one_line(e) == "Error merging override a=b: Invalid value 'b'"


@pytest.mark.parametrize(
    ("command", "required"),
    [
        ("compare", "required: two or more run folders"),
        ("report", "required: the report folder"),
        ("plan", "required for a plan"),
    ],
)
def test_every_subcommand_help_names_what_is_required(
    tmp_path: Path, command: str, required: str
) -> None:
    proc = run_medprobe(tmp_path, command, "--help")
    assert proc.stdout.startswith(f"usage: medprobe {command}")
    assert required in " ".join(proc.stdout.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["report", "x", "--out", "o", "--metric", "auc"],
            "medprobe: error: medprobe report: "
            "argument --metric: invalid choice: 'auc' (choose from 'auroc_macro', 'f1_macro', "
            "'accuracy') (see medprobe report --help)",
        ),  # fmt: skip
        (
            ["report", "x"],
            "medprobe: error: medprobe report: the following arguments are "
            "required: --out (see medprobe report --help)",
        ),  # fmt: skip
        (["compare", "a"], "medprobe: error: medprobe compare needs at least two run folders"),
        (
            ["plan", "--model", "idefics9b"],
            "medprobe: error: medprobe plan: a plan needs "
            "--max-memory, the memory of each GPU to use, e.g. --max-memory 0=48GiB,1=48GiB "
            "(GiB = 2**30 bytes, GB = 1e9); see medprobe plan --help",
        ),  # fmt: skip
    ],
)
def test_bad_subcommand_arguments_are_one_line_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = run_medprobe(tmp_path, *args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]


def test_typos_paths_and_version_are_one_line(tmp_path: Path) -> None:
    """A mistyped subcommand, an output folder that cannot be created and --version."""
    proc = run_medprobe(tmp_path, "reprot", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "medprobe: error: unknown subcommand 'reprot'; did you mean 'report'? (medprobe help "
        "lists them; a run takes overrides key=value)"
    ]
    (tmp_path / "afile").write_text("x")
    proc = run_medprobe(tmp_path, "report", str(tmp_path), "--out", str(tmp_path / "afile" / "r"),
                        check=False)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("medprobe: error:") and "Traceback" not in proc.stderr
    from medprobe import __version__

    assert run_medprobe(tmp_path, "--version").stdout.strip() == f"medprobe {__version__}"


def test_a_run_stopped_by_a_mistake_leaves_no_empty_job_folder(tmp_path: Path) -> None:
    proc = run_medprobe(tmp_path, "layer=99", "tracker=none", check=False)
    assert proc.returncode == 2 and "layer" in proc.stderr
    assert (
        not list((tmp_path / "outputs").rglob(".hydra"))
        if (tmp_path / "outputs").exists()
        else True
    )


def test_an_out_folder_that_is_a_file_is_named_so(tmp_path: Path) -> None:
    """``mkdir`` of a file's path said "File exists"; a file inside the path "Not a directory"."""
    from medprobe.errors import storage_error

    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(OSError) as e:
        f.mkdir(parents=True, exist_ok=True)
    assert str(storage_error(e.value)) == f"{f}: is a file, not a folder"
    with pytest.raises(OSError) as e:
        (f / "out").mkdir(parents=True, exist_ok=True)
    assert str(storage_error(e.value)) == (
        f"{f / 'out'}: Not a directory (a part of the path is a file)"
    )
    missing = FileNotFoundError(2, "No such file or directory", str(tmp_path / "x"))
    assert str(storage_error(missing)) == f"{tmp_path / 'x'}: No such file or directory"


@pytest.mark.parametrize("command", ["data", "report", "compare"])
def test_an_empty_out_is_refused_not_the_current_folder(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--out "$OUT"`` with OUT unset was ``Path('.')``: data wrote manifest.csv here."""
    import importlib

    from medprobe.errors import ConfigError

    module = {"data": "medprobe.cli.data", "report": "medprobe.report"}.get(
        command, "medprobe.compare"
    )
    main = importlib.import_module(module).main
    monkeypatch.chdir(tmp_path)
    args = {"data": ["task=demo"], "report": [str(tmp_path)], "compare": ["a", "b"]}[command]
    with pytest.raises(ConfigError) as e:
        main([*args, "--out", " "])
    assert str(e.value) == (
        f"medprobe {command}: argument --out: empty; give a folder (see medprobe {command} --help)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_flag_after_overrides_is_accepted(tmp_path: Path) -> None:
    """``medprobe seed=-1 -m tracker=none``: Hydra's argparse printed its usage text and
    "unrecognized arguments"; the flag is moved first, so the job runs (here: refuses seed)."""
    proc = run_medprobe(tmp_path, "seed=-1", "-m", "tracker=none",
                        f"output_dir={tmp_path / 'sweep'}", check=False)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "medprobe: error: seed must be >= 0, got -1"
    assert "unrecognized arguments" not in proc.stderr


def test_flags_first_keeps_each_flag_with_its_value() -> None:
    from medprobe.cli.run import flags_first

    assert flags_first(["seed=3", "--cfg", "job", "layer=2"]) == [
        "--cfg",
        "job",
        "seed=3",
        "layer=2",
    ]
    assert flags_first(["a=1", "-m", "b=2,3", "--info", "defaults", "c=4"]) == [
        "-m", "--info", "defaults", "a=1", "b=2,3", "c=4"
    ]  # fmt: skip
    assert flags_first(["a=1", "--info", "b=2"]) == ["--info", "a=1", "b=2"]
    assert flags_first(["--cfg=job", "a=1"]) == ["--cfg=job", "a=1"]


def test_a_closed_stdout_pipe_ends_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``medprobe --help | head -1``: the reader closes the pipe; no 'error: Broken pipe' line,
    exit 141 (128 + SIGPIPE) as a shell tool stopped by it."""
    import medprobe.cli as cli

    def closed(argv: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_command", lambda name: closed)
    with pytest.raises(SystemExit) as stop:
        cli.main(["data", "task=demo"])
    assert stop.value.code == 141
    assert capsys.readouterr().err == ""
