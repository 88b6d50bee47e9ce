"""notebooks/sweep_report.ipynb executes headless (nbclient, a real python3 kernel) on a small
offline sweep made by the real pipeline, from a working directory that is not the repository."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import REPO, run_medprobe

NOTEBOOK = REPO / "notebooks" / "sweep_report.ipynb"


def _first_code_cell() -> str:
    nb = json.loads(NOTEBOOK.read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


def test_notebook_executes_headless(
    tmp_path: Path, tiny_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    common = ["tracker=none", "bootstrap.n=50", "progress=false"]
    sweep = tmp_path / "sweep"
    # the demo task, two model identities (clip, plip: both a tiny local CLIP) x layers 1, 2 in
    # one --multirun: the report has paired comparisons (per-class AUROC: DeLong)
    run_medprobe(tmp_path, "-m", "model=clip,plip", f"model.hf_id={tiny_clip}", "layer=1,2",
                 *common, f"output_dir={sweep}")  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("MEDPROBE_SWEEP_DIR", str(sweep))
    monkeypatch.delenv("MEDPROBE_SWEEP_DIRS", raising=False)
    monkeypatch.delenv("MEDPROBE_REPORT_DIR", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(elsewhere)}})  # fmt: skip
    client.execute()  # raises CellExecutionError on the first failing cell
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert "4 run(s): [('demo', 'clip'), ('demo', 'plip')]" in text
    assert "DeLong p=" in text and "paper's t-test (" in text
    assert text.index("DeLong p=") < text.index("paper's t-test (")
    # run labels never read like metric names ("f1" for training fraction 1)
    assert "clip L2 frac1 s0" in text and " f1 s0" not in text
    # the demo's test split has classes with fewer than 10 positives: marked unreliable
    assert "fewer than 10 test positives in" in text
    # layers 1, 2 at full data, no paper task: no paper values, no retained-at-10% number
    assert "no paper reproduction and no runs at training fractions 0.1 and 1.0" in text
    assert f"page: {sweep / 'report' / 'index.html'}" in text
    assert (sweep / "report" / "index.html").is_file()
    assert (sweep / "report" / "summary.csv").is_file()
    assert list((sweep / "report").glob("bars_*.png"))


def test_notebook_finds_multirun_above_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "multirun").mkdir()
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.delenv("MEDPROBE_SWEEP_DIR", raising=False)
    monkeypatch.delenv("MEDPROBE_SWEEP_DIRS", raising=False)
    monkeypatch.delenv("MEDPROBE_REPORT_DIR", raising=False)
    ns: dict[str, object] = {"__name__": "__main__"}
    exec(compile(_first_code_cell(), "sweep_report.ipynb", "exec"), ns)
    assert ns["SWEEP_DIRS"] == [tmp_path.resolve() / "multirun"]
    assert ns["REPORT_DIR"] == tmp_path.resolve() / "multirun" / "report"


def test_notebook_says_what_to_do_when_nothing_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEDPROBE_SWEEP_DIRS", raising=False)
    monkeypatch.setenv("MEDPROBE_SWEEP_DIR", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="MEDPROBE_SWEEP_DIR names no folder: .*nope"):
        exec(compile(_first_code_cell(), "sweep_report.ipynb", "exec"), {})
    monkeypatch.delenv("MEDPROBE_SWEEP_DIR")
    if any((p / "multirun").is_dir() for p in [tmp_path, *tmp_path.parents]):
        pytest.skip("a 'multirun' folder exists above the temporary folder")
    with pytest.raises(
        FileNotFoundError, match="set MEDPROBE_SWEEP_DIR .* looked for a 'multirun'"
    ):
        exec(compile(_first_code_cell(), "sweep_report.ipynb", "exec"), {})
