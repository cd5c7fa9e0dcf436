"""The notebooks: each runs top to bottom, every assert in it holding, and each is committed
executed.

By default the notebooks run in quick mode (``NUMPY_VAE_QUICK=1``: fewer samples and
epochs). With ``NUMPY_VAE_NOTEBOOKS=full`` (set by CI) they run in full mode, the mode
whose outputs are committed, so the asserts behind every sentence of the committed
text are the ones that ran. Every ``notebooks/*.ipynb`` is found by glob, so a new
notebook is tested as soon as it exists. Execution works on an in-memory copy; the
committed file is never rewritten.
"""

import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
FULL = os.environ.get("NUMPY_VAE_NOTEBOOKS") == "full"
MODE = "full" if FULL else "quick"
NOTEBOOK_TIMEOUT = 1800 if FULL else 300  # seconds for a whole notebook
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")

by_name = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.slow
@by_name
def test_notebook_runs_and_its_asserts_hold(path, monkeypatch):
    # The kernel is a child process: it inherits os.environ as it is when the kernel starts.
    if FULL:
        monkeypatch.delenv("NUMPY_VAE_QUICK", raising=False)
    else:
        monkeypatch.setenv("NUMPY_VAE_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    committed = path.read_bytes()
    nb = nbformat.reads(committed.decode("utf-8"), as_version=4)
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        # nbclient times each cell; give each one what is left of the notebook's budget.
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        record_timing=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        # str(err) holds the failing cell's source and its traceback (minus terminal colours).
        failure = f"a cell failed in {MODE} mode\n{ANSI_COLOUR.sub('', str(err))}"
    except (nbclient.exceptions.CellTimeoutError, nbclient.exceptions.DeadKernelError) as err:
        failure = f"not done within {NOTEBOOK_TIMEOUT} s, or the kernel died: {err}"
    if failure:  # failed outside the except block, so the report shows the traceback once
        pytest.fail(f"{path.name}: {failure}", pytrace=False)
    assert path.read_bytes() == committed, f"executing {path.name} modified the file"


@by_name
def test_notebook_is_committed_executed(path):
    text = path.read_text(encoding="utf-8")
    assert "sys.path" not in text, f"{path.name} mentions sys.path: import the installed package"
    nb = nbformat.reads(text, as_version=4)
    assert nb.cells and nb.cells[0].cell_type == "markdown", (
        f"{path.name}: the first cell should be markdown naming the lecture section")
    cells = [c for c in code_cells(nb) if c.source.strip()]
    assert cells, f"{path.name} has no code"
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name} is not saved executed top to bottom in one run: execution counts {counts}")
    outputs = [o for c in cells for o in c.outputs]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, f"{path.name} was saved with errors: {errors}"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} has no embedded figure (image/png output)"


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"
    badly_named = [p.name for p in NOTEBOOKS if not re.fullmatch(r"\d\d_\w+\.ipynb", p.name)]
    assert not badly_named, f"name notebooks NN_topic.ipynb: {badly_named}"

