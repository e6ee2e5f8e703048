"""The notebooks in labs/: each jupytext script and its .ipynb hold the same cells, and each notebook runs from top
to bottom offline (nbclient, a fresh kernel in a temporary folder) and shows at least one figure inline."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

LABS = Path(__file__).resolve().parents[1] / "labs"
SCRIPTS = sorted(LABS.glob("[0-9]*.py"))


def _needs_model(script: Path) -> bool:
    return "mechscope.load(" in script.read_text()


def _marks(script: Path):
    return [pytest.mark.heavy] + ([pytest.mark.slow] if _needs_model(script) else [])


def test_every_notebook_has_its_script():
    assert SCRIPTS
    assert {p.stem for p in LABS.glob("*.ipynb")} == {p.stem for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_notebook_is_in_sync_with_its_script(script):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    from_script = jupytext.read(script)
    notebook = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    assert [(c.cell_type, c.source) for c in notebook.cells] == [(c.cell_type, c.source) for c in from_script.cells], (
        f"{script.name} and its .ipynb differ: run `jupytext --sync {script.relative_to(LABS.parent)}`")


@pytest.mark.parametrize("script", [pytest.param(s, marks=_marks(s), id=s.stem) for s in SCRIPTS])
def test_notebook_runs_and_shows_figures(script, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    src = str(Path(__file__).resolve().parents[1] / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    nb = jupytext.read(script)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{script.name} shows no figure"
