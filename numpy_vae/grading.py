"""Exercise notebooks for students, written from the solution notebooks, and their grading.

The solution notebooks (``notebooks/``) mark each exercise the way nbgrader does:
inside a code cell, the solution sits between ``### BEGIN SOLUTION`` and
``### END SOLUTION``, and the line just above ``### BEGIN SOLUTION`` is
``# HINT: ...``, one line saying what to write. Every cell of an exercise (its
text, its solution, its check) carries the cell metadata
``{"numpy_vae": {"exercise": NAME}}``, NAME being what its check reports
(``Result.exercise``: "kl", "tanh", "em_step", ...).

``write_exercises`` (``numpy-vae exercises``) writes the student version of
each notebook that has solution blocks: every block and its hint line replaced
by ``raise NotImplementedError("<the hint>")``, outputs and execution counts
cleared, a note under the first cell. Those files are never edited by hand.

``grade_folder`` (``numpy-vae grade``) runs each submitted notebook in a
kernel of its own (nbclient, errors allowed, each cell at most ``timeout``
seconds, then interrupted) and reads what the checks recorded
(``exercises.RECORD_ENV``): one row per student and exercise, "passed", the
diagnosis, "not attempted", "error: ..." or "timed out". A broken submission
(not a notebook, invalid JSON, a kernel that dies) gives rows that say so; it
never stops the grading. The notebooks run the student's code with your
rights: grade untrusted work inside a container or a throw-away account.

Needs nbformat, nbclient and ipykernel, the extras ``teach``
(``pip install -e ".[teach]"`` in the repository).
"""

import copy
import csv
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import NumpyVAEError
from .exercises import RECORD_ENV

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HINT = re.compile(r"^(\s*)# HINT: (\S.*)$")
TAG = "numpy_vae"  # the key of the cell and notebook metadata this module reads and writes
NOTE_ID = "exercise-version"  # the id of the note the student version gets under its first cell
PASSED, NOT_ATTEMPTED, TIMED_OUT = "passed", "not attempted", "timed out"
KERNEL_DIED = "error: the kernel died"
KERNEL_STUCK = "error: not run, the kernel ignored the interrupt of a cell that timed out"
GRADES_HEADER = ("student", "notebook", "exercise", "result")
DEFAULT_TIMEOUT = 120  # seconds each cell of a submission may run
_TIMEOUT_MARK = "numpy_vae_timed_out"  # in the reply nbclient makes up for an interrupted cell
_MAX_TEXT = 300  # characters of an error message kept in a grade


class MissingPackageError(NumpyVAEError, ImportError):
    """nbformat or nbclient is not installed."""


class ExerciseFormatError(NumpyVAEError, ValueError):
    """A solution notebook whose markers cannot be turned into an exercise."""


def _notebook_packages():
    try:
        import nbclient
        import nbformat
    except ImportError as e:
        raise MissingPackageError(f"this needs nbformat, nbclient and ipykernel, the extras "
                                  f"'teach' (pip install -e '.[teach]' in the repository): "
                                  f"{e}") from None
    return nbformat, nbclient


def exercise_of(cell):
    """The exercise a cell belongs to (its ``numpy_vae.exercise`` metadata), or None."""
    tag = cell.get("metadata", {}).get(TAG)
    name = tag.get("exercise") if isinstance(tag, dict) else None
    return name if isinstance(name, str) and name else None


# ---------------------------------------------------------------------------
# The student versions


def student_source(source, where="the cell"):
    """``source`` with each solution block, and the hint line above it, replaced by a raise.

    Returns (new source, the hints in order). ``where`` names the cell in errors.
    """
    lines, out, hints, i = source.split("\n"), [], [], 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == END:
            raise ExerciseFormatError(f"{where}: '{END}' without a '{BEGIN}' before it")
        if line.strip() != BEGIN:
            out.append(line)
            i += 1
            continue
        hint = HINT.match(out[-1]) if out else None
        if hint is None:
            raise ExerciseFormatError(f"{where}: the line above '{BEGIN}' must be '# HINT: ...', "
                                      f"the message of the NotImplementedError replacing it")
        indent = hint.group(1)
        if line[:len(line) - len(line.lstrip())] != indent:
            raise ExerciseFormatError(f"{where}: indent '{BEGIN}' like its '# HINT:' line")
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() in (BEGIN, END)), None)
        if end is None or lines[end].strip() == BEGIN:
            raise ExerciseFormatError(f"{where}: '{BEGIN}' without its '{END}'")
        text = hint.group(2).strip()
        out[-1] = f"{indent}raise NotImplementedError({json.dumps(text, ensure_ascii=False)})"
        hints.append(text)
        i = end + 1
    return "\n".join(out), hints


def _note(solution):
    return (f"*Exercise version of `{solution}`, written by `numpy-vae exercises`; do not edit "
            f"it by hand.* Each **Exercise** below has a blank: a line "
            f"`raise NotImplementedError(\"...\")` whose message says what to write. Replace it "
            f"with your code, run the cell, then run the check under it: it prints "
            f"`passed: ...`, or the step that failed, the numbers it compared and the likely "
            f"mistake. Run the notebook from the top first, so that the names the exercises "
            f"use are defined.")


def student_version(nb, solution):
    """The exercise version of a solution notebook, or None if it has no solution blocks.

    ``solution`` is the name the note and the metadata give for the solution
    notebook (e.g. "notebooks/04_the_kl_term.ipynb").
    """
    nbformat, _ = _notebook_packages()
    nb, names, found = copy.deepcopy(nb), [], False
    for index, cell in enumerate(nb.cells):
        where = f"{solution}, cell {index + 1}"
        marked = BEGIN in cell.source or END in cell.source
        if cell.cell_type == "code":
            if marked:
                cell.source, _ = student_source(cell.source, where)
                found = True
                if exercise_of(cell) is None:
                    raise ExerciseFormatError(f"{where} holds a solution but names no exercise: "
                                              f"give it the metadata "
                                              f'{{"{TAG}": {{"exercise": NAME}}}}')
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        elif marked:
            raise ExerciseFormatError(f"{where}: solution markers in a {cell.cell_type} cell; "
                                      f"only code cells become exercises")
        name = exercise_of(cell)
        if name and name not in names:
            names.append(name)
    if not found:
        return None
    note = nbformat.v4.new_markdown_cell(_note(solution))
    note["id"] = NOTE_ID
    nb.cells.insert(1, note)
    nb.metadata[TAG] = {"solution": solution, "exercises": names}
    return nb


def exercise_files(notebooks="notebooks"):
    """{file name: the text of its student version} for every notebook with solution blocks."""
    nbformat, _ = _notebook_packages()
    notebooks = Path(notebooks)
    if not notebooks.is_dir():
        raise ExerciseFormatError(f"{notebooks} is not a folder of notebooks")
    files = {}
    for path in sorted(notebooks.glob("*.ipynb")):
        nb = student_version(nbformat.read(path, as_version=4), f"{notebooks.name}/{path.name}")
        if nb is not None:
            text = nbformat.writes(nb)
            files[path.name] = text if text.endswith("\n") else text + "\n"
    return files


def _write_atomically(path, text):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def write_exercises(notebooks="notebooks", out="exercises"):
    """Write the student versions into ``out``; returns the paths written, in order."""
    files = exercise_files(notebooks)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        _write_atomically(out / name, text)
    return [out / name for name in files]


# ---------------------------------------------------------------------------
# Running one notebook


@dataclasses.dataclass
class Execution:
    """What running a notebook gave.

    ``cells``: cell index -> "ok", "timed out" or "error: Name: message", for
    every code cell that ran; ``stopped``: None, or why the run ended early
    ("error: the kernel died", ...), with ``stopped_at`` the index of the cell
    then running; ``records``: the checks' records, in order.
    """

    cells: dict
    stopped: str | None
    stopped_at: int | None
    records: list


def _first_line(text):
    line = str(text).strip().split("\n")[0]
    return line if len(line) <= _MAX_TEXT else line[:_MAX_TEXT - 3] + "..."


def _read_records(path):
    records = []
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("exercise"), str):
            records.append(r)
    return records


def _quiet_log():
    log = logging.getLogger("numpy_vae.grading.nbclient")
    log.propagate = False  # nbclient logs every timeout it handles; the grades say it once
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log


class _KernelStuck(Exception):
    """The kernel ignored the interrupt after a timeout (a loop that catches KeyboardInterrupt)."""


async def _responds(kc, seconds=5):
    """Whether the kernel answers a kernel_info request within ``seconds`` (idle, not stuck)."""
    try:
        await kc.kernel_info(reply=True, timeout=seconds)
    except Exception:  # queue.Empty or TimeoutError: no answer in time
        return False
    return True


def execute_notebook(nb, timeout=DEFAULT_TIMEOUT):
    """Run every cell of ``nb`` (a copy) in a new kernel, in a temporary folder.

    Errors are allowed, so one failing cell does not hide the others. A cell
    running longer than ``timeout`` seconds is interrupted and marked "timed
    out", and the next cell runs; if the kernel ignores the interrupt, it is
    stopped and the notebook ends there. So a notebook of n code cells takes
    at most about n times ``timeout``. The kernel runs in quick mode
    (``NUMPY_VAE_QUICK=1``) with ``exercises.RECORD_ENV`` naming the file its
    checks append to.
    """
    nbformat, nbclient = _notebook_packages()
    nb, cells, running = copy.deepcopy(nb), {}, [None]

    def started(cell, cell_index, **_):
        running[0] = cell_index

    async def executed(cell, cell_index, execute_reply, **_):
        content = execute_reply.get("content", {})
        if content.get(_TIMEOUT_MARK):
            cells[cell_index] = TIMED_OUT
            if not await _responds(client.kc):
                running[0] = cell_index + 1  # the cells from the next one on never run
                raise _KernelStuck
        elif content.get("status") == "error":
            cells[cell_index] = (f"error: {content.get('ename', 'Error')}: "
                                 f"{_first_line(content.get('evalue', ''))}")
        else:
            cells[cell_index] = "ok"

    with tempfile.TemporaryDirectory(prefix="numpy-vae-grade-") as work:
        record = Path(work) / "record.jsonl"
        env = {**os.environ, "NUMPY_VAE_QUICK": "1", "MPLBACKEND": "Agg", RECORD_ENV: str(record)}
        client = nbclient.NotebookClient(
            nb, kernel_name="python3", timeout=timeout, allow_errors=True,
            interrupt_on_timeout=True, record_timing=False, log=_quiet_log(),
            shutdown_kernel="immediate",  # a kernel is never reused: no need to wait for it
            error_on_timeout={"ename": "TimeoutError", "evalue": f"over {timeout} s",
                              "traceback": [], _TIMEOUT_MARK: True},
            resources={"metadata": {"path": work}},
            on_cell_execute=started, on_cell_executed=executed)
        stopped = None
        try:
            # the kernel's own log lines (not the cells' output) would clutter the grader's
            client.execute(env=env, stderr=subprocess.DEVNULL)
        except nbclient.exceptions.DeadKernelError:
            stopped = KERNEL_DIED
        except _KernelStuck:
            stopped = KERNEL_STUCK
        except Exception as e:  # the kernel did not start, or nbclient gave up on this notebook
            stopped = f"error: the notebook could not be run ({type(e).__name__}: {_first_line(e)})"
        finished = stopped is None
        return Execution(cells, stopped, None if finished else running[0], _read_records(record))


# ---------------------------------------------------------------------------
# Grading


@dataclasses.dataclass(frozen=True)
class Grade:
    """One row of the grades: a student's result on one exercise."""

    student: str
    notebook: str
    exercise: str
    result: str


def _read_notebook(path):
    """(the notebook, None), or (None, why it is not one)."""
    nbformat, _ = _notebook_packages()
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # not JSON, not text, JSON of another kind, an invalid notebook
        return None, f"error: not a notebook ({type(e).__name__}: {_first_line(e)})"
    return nb, None


def _result_of(name, record, cells_of, run):
    """One exercise's grade: what its check recorded, else what became of its cells."""
    if record is not None:
        status = record.get("status")
        if status == PASSED:
            return PASSED
        if status == NOT_ATTEMPTED:
            return NOT_ATTEMPTED
        return _first_line(record.get("diagnosis") or "failed")
    for i in cells_of.get(name, []):
        if i in run.cells and run.cells[i] != "ok":
            return run.cells[i]
        if i not in run.cells and run.stopped_at is not None and i >= run.stopped_at:
            return run.stopped  # the kernel died in this cell or before it
    if name not in cells_of:
        return "error: its cells are missing"
    return "error: its check did not run"


def grade_notebook(path, timeout=DEFAULT_TIMEOUT):
    """Run one submitted notebook; returns [(notebook name, exercise, result)], one per exercise."""
    nb, why = _read_notebook(path)
    if nb is None:
        return [(Path(path).stem, "-", why)]
    meta = nb.metadata.get(TAG) if isinstance(nb.metadata.get(TAG), dict) else {}
    notebook = Path(str(meta.get("solution") or Path(path).name)).stem
    cells_of = {}
    for i, cell in enumerate(nb.cells):
        name = exercise_of(cell)
        if name and cell.cell_type == "code":
            cells_of.setdefault(name, []).append(i)
    names = [n for n in meta.get("exercises", []) if isinstance(n, str)]
    names += [n for n in cells_of if n not in names]
    run = execute_notebook(nb, timeout)
    last = {r["exercise"]: r for r in run.records}  # a check run twice: the last run counts
    names = names or list(last)  # metadata stripped: the checks that ran are all there is
    if not names:
        return [(notebook, "-", run.stopped or "error: no exercises in this notebook (its cells "
                 "carry no numpy_vae metadata: is it one of the exercise notebooks?)")]
    return [(notebook, n, _result_of(n, last.get(n), cells_of, run)) for n in names]


def _hidden(name):
    """Hidden files and folders (.ipynb_checkpoints, .DS_Store, ...) are no submissions."""
    name = getattr(name, "name", name)
    return name.startswith(".") or name == "__pycache__"


def find_submissions(folder, skip=()):
    """[(student, path)]: each file in ``folder`` is a student's (named by the file), and
    each sub-folder holds one student's notebooks (named by the folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExerciseFormatError(f"{folder} is not a folder")
    skip = {Path(p).resolve() for p in skip}
    found = []
    for entry in sorted(folder.iterdir()):
        if _hidden(entry) or entry.resolve() in skip:
            continue
        if entry.is_dir():
            notebooks = [p for p in sorted(entry.rglob("*.ipynb")) if p.is_file()
                         and not any(_hidden(part) for part in p.relative_to(entry).parts)]
            found += [(entry.name, p) for p in notebooks] or [(entry.name, entry)]
        else:
            found.append((entry.stem, entry))
    if not found:
        raise ExerciseFormatError(f"{folder} holds no submissions (a notebook per student, or a "
                                  f"folder per student)")
    return found


def grade_folder(folder, timeout=DEFAULT_TIMEOUT, skip=(), report=None):
    """Grade every submission in ``folder`` (see ``find_submissions``); returns the Grades.

    ``report(student, grades, seconds)``, if given, is called after each notebook.
    """
    grades = []
    for student, path in find_submissions(folder, skip):
        start = time.monotonic()
        if path.is_dir():
            rows = [(path.name, "-", "error: no notebook (.ipynb) in this folder")]
        elif path.suffix != ".ipynb":
            rows = [(path.stem, "-", "error: not a notebook (expected a .ipynb file)")]
        else:
            rows = grade_notebook(path, timeout)
        new = [Grade(student, *row) for row in rows]
        grades += new
        if report is not None:
            report(student, new, time.monotonic() - start)
    return grades


def write_grades(grades, out):
    """Write the grades as CSV (header ``GRADES_HEADER``), replacing ``out`` atomically."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(GRADES_HEADER)
        writer.writerows(dataclasses.astuple(g) for g in grades)
    os.replace(tmp, out)


if __name__ == "__main__":  # python -m numpy_vae.grading write|grade ...: the CLI's commands
    from .cli import main

    COMMANDS = {"write": "exercises", "grade": "grade"}
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print("usage: python -m numpy_vae.grading write [--notebooks DIR] [--out DIR] | "
              "grade FOLDER [--out grades.csv] [--timeout SECONDS]", file=sys.stderr)
        sys.exit(2)
    sys.exit(main([COMMANDS[sys.argv[1]], *sys.argv[2:]]))
