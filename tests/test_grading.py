"""The exercise notebooks and their grader (``numpy_vae.grading``, ``numpy-vae exercises|grade``).

The committed ``exercises/`` must be exactly what the generator writes from
``notebooks/`` now; each student version must run up to its blanks and stop
only there, with the hint; and the grader, given a folder of submissions
(right, wrong, untouched, looping, raising, killing its kernel, not a
notebook), must give each the row it deserves without stopping.
"""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from numpy_vae import grading  # noqa: E402  (after the skips: grading needs nbformat)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS, EXERCISES = ROOT / "notebooks", ROOT / "exercises"
EXERCISE_NOTEBOOKS = sorted(EXERCISES.glob("*.ipynb"))
HINT_LINE = re.compile(r"^\s*# HINT: (.+)$", re.M)

# Where the lecture's exercises live: notebook -> the exercises (their checks' names) it must hold.
PLACEMENT = {
    "02_the_lower_bound": ["log_mean_exp", "importance_weighted_log_px"],
    "03_dense_layers_and_backprop": ["affine", "tanh", "mlp_backward"],
    "04_the_kl_term": ["kl"],
    "05_reconstruction_and_reparameterization": ["reparameterize", "bernoulli", "gaussian",
                                                 "variance_floor", "loss_and_grads", "adam_step"],
    "07_vae_and_gmm": ["em_step"],
}


def cli(*args, cwd=ROOT):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "numpy_vae", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


# ---------------------------------------------------------------------------- the generated files

def test_the_committed_exercises_are_what_the_generator_writes_now():
    files = grading.exercise_files(NOTEBOOKS)
    committed = {p.name: p.read_bytes() for p in EXERCISE_NOTEBOOKS}
    fix = "regenerate them: numpy-vae exercises (never edit exercises/ by hand)"
    assert sorted(committed) == sorted(files), f"exercises/ holds other notebooks: {fix}"
    stale = [name for name, text in files.items() if committed[name] != text.encode("utf-8")]
    assert not stale, f"exercises/{stale} differ from what the generator writes now: {fix}"


def test_each_exercise_sits_in_its_lecture_notebook():
    placed = {p.stem: nbformat.read(p, as_version=4).metadata[grading.TAG]["exercises"]
              for p in EXERCISE_NOTEBOOKS}
    assert placed == PLACEMENT


def solution_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and grading.BEGIN in c.source]


def test_a_student_version_changes_only_the_solutions_and_the_outputs():
    """With each blank filled by its solution again, a student version is its solution notebook."""
    for path in EXERCISE_NOTEBOOKS:
        solution = nbformat.read(NOTEBOOKS / path.name, as_version=4)
        student = nbformat.read(path, as_version=4)
        assert student.cells[1].id == grading.NOTE_ID and "numpy-vae exercises" in \
            student.cells[1].source
        cells = student.cells[:1] + student.cells[2:]
        assert [c.id for c in cells] == [c.id for c in solution.cells]
        for mine, theirs in zip(cells, solution.cells):
            assert mine.metadata == {k: v for k, v in theirs.metadata.items() if k != "execution"}
            if mine.cell_type == "code":
                assert mine.outputs == [] and mine.execution_count is None
            if grading.BEGIN in theirs.source:
                source, hints = grading.student_source(theirs.source)
                assert mine.source == source and hints
                assert [f'raise NotImplementedError({json.dumps(h)})' in mine.source
                        for h in hints] == [True] * len(hints)
                assert grading.BEGIN not in mine.source and "# HINT:" not in mine.source
            else:
                assert mine.source == theirs.source, f"{path.name}: cell {mine.id} changed"


def test_the_generator_on_a_small_notebook(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A title"),
                nbformat.v4.new_code_cell(
                    "import numpy as np\n\n\ndef f(x):\n    # HINT: return 2 x, \"twice\"\n"
                    "    ### BEGIN SOLUTION\n    y = 2 * x\n    return y\n"
                    "    ### END SOLUTION\n\n\n"
                    "def g(x):\n    # HINT: x squared\n    ### BEGIN SOLUTION\n    return x * x\n"
                    "    ### END SOLUTION",
                    execution_count=3, outputs=[nbformat.v4.new_output("stream", text="hi")],
                    metadata={grading.TAG: {"exercise": "twice"}}),
                nbformat.v4.new_code_cell("print(f(1))", execution_count=4)]
    nbformat.write(nb, src / "01_small.ipynb")
    plain = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# no exercises")])
    nbformat.write(plain, src / "02_plain.ipynb")

    out = tmp_path / "exercises"
    r = subprocess.run([sys.executable, "-m", "numpy_vae.grading", "write", "--notebooks", src,
                        "--out", out], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["01_small.ipynb"]  # no markers: no file
    student = nbformat.read(out / "01_small.ipynb", as_version=4)
    assert student.cells[2].source == (
        'import numpy as np\n\n\ndef f(x):\n'
        '    raise NotImplementedError("return 2 x, \\"twice\\"")\n\n\n'
        'def g(x):\n    raise NotImplementedError("x squared")')
    assert all(c.outputs == [] and c.execution_count is None for c in student.cells[2:])
    assert student.metadata[grading.TAG] == {"solution": "notebooks/01_small.ipynb",
                                             "exercises": ["twice"]}
    assert "notebooks/01_small.ipynb" in student.cells[1].source
    namespace = {}
    exec(student.cells[2].source, namespace)
    with pytest.raises(NotImplementedError, match='return 2 x, "twice"'):
        namespace["f"](1)


BLOCK = "    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION"
MALFORMED = [
    ("def f():\n" + BLOCK, "must be '# HINT: ...'"),
    ("def f():\n    # HINT: h\n    ### BEGIN SOLUTION\n    pass", "without its '### END"),
    ("def f():\n    # HINT: h\n    pass\n    ### END SOLUTION", "without a '### BEGIN"),
    ("def f():\n    # HINT: h\n    ### BEGIN SOLUTION\n    # HINT: i\n" + BLOCK,
     "without its '### END"),
    ("def f():\n    # HINT: h\n### BEGIN SOLUTION\n    pass\n### END SOLUTION", "indent"),
]


@pytest.mark.parametrize("source, phrase", MALFORMED, ids=["no hint", "no end", "no begin",
                                                           "nested", "indent"])
def test_malformed_markers_are_refused_naming_the_cell(source, phrase):
    with pytest.raises(grading.ExerciseFormatError, match=re.escape(phrase)) as err:
        grading.student_source(source, "notebooks/x.ipynb, cell 3")
    assert "notebooks/x.ipynb, cell 3" in str(err.value)


def test_a_solution_without_an_exercise_name_or_in_markdown_is_refused(tmp_path):
    marked = "def f():\n    # HINT: h\n" + BLOCK
    for cell, phrase in [(nbformat.v4.new_code_cell(marked), "names no exercise"),
                         (nbformat.v4.new_markdown_cell(marked), "in a markdown cell")]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), cell])
        nbformat.write(nb, tmp_path / "01_x.ipynb")
        r = cli("exercises", "--notebooks", tmp_path, "--out", tmp_path / "out")
        assert r.returncode == 2 and phrase in r.stderr and "cell 2" in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- the student versions

@pytest.mark.slow
@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=[p.name for p in EXERCISE_NOTEBOOKS])
def test_a_student_version_runs_up_to_its_blanks_and_stops_only_there(path):
    solution = nbformat.read(NOTEBOOKS / path.name, as_version=4)
    hints = [h for c in solution.cells for h in HINT_LINE.findall(c.source)]
    nb = nbformat.read(path, as_version=4)
    run = grading.execute_notebook(nb, timeout=300)
    assert run.stopped is None, run.stopped
    errors = {i: out for i, out in run.cells.items() if out != "ok"}
    others = {i: out for i, out in errors.items()
              if out not in {f"error: NotImplementedError: {h}" for h in hints}}
    assert errors and not others, f"{path.name}: cells failing with more than a blank: {others}"
    expected = nb.metadata[grading.TAG]["exercises"]
    assert [(r["exercise"], r["status"]) for r in run.records] == [
        (name, "not attempted") for name in expected]


# ---------------------------------------------------------------------------- grading a folder

def kl_cells():
    """The KL exercise of notebook 04 as its own small notebook: (solution, student version)."""
    full = nbformat.read(NOTEBOOKS / "04_the_kl_term.ipynb", as_version=4)
    cells = [c for c in full.cells if grading.exercise_of(c) == "kl"]
    imports = nbformat.v4.new_code_cell("import numpy as np\nfrom numpy_vae import exercises")
    title = nbformat.v4.new_markdown_cell("# The KL term, cut down")
    solution = nbformat.v4.new_notebook(cells=[title, imports, *cells], metadata=full.metadata)
    return solution, grading.student_version(solution, "notebooks/04_the_kl_term.ipynb")


def submission(student, body):
    """The student version with its solution cell replaced by ``body`` (the two functions)."""
    nb = nbformat.from_dict(json.loads(json.dumps(student)))
    cell = next(c for c in nb.cells if c.cell_type == "code" and grading.exercise_of(c))
    cell.source = body
    return nb


RIGHT = '''
def kl_standard_normal(mu, logvar):
    return 0.5 * (np.exp(logvar) - 1 - logvar + mu**2).sum(axis=1), (mu, logvar)


def kl_standard_normal_backward(dkl, cache):
    mu, logvar = cache
    return dkl[:, None] * mu, 0.5 * dkl[:, None] * np.expm1(logvar)
'''


def write(nb, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.mark.slow
def test_grading_a_folder_gives_each_submission_its_row(tmp_path):
    solution, student = kl_cells()
    folder = tmp_path / "submitted"
    write(submission(student, RIGHT), folder / "right.ipynb")
    write(submission(student, RIGHT.replace("0.5 * (", "(")), folder / "wrong.ipynb")
    write(student, folder / "untouched.ipynb")
    write(submission(student, RIGHT.replace("    return 0.5", "    while True:\n        pass\n"
                                            "    return 0.5")), folder / "loops.ipynb")
    write(submission(student, RIGHT.replace("return 0.5", "raise ValueError('mine'); return 0.5")),
          folder / "raises.ipynb")
    write(submission(student, RIGHT.replace("def kl_standard_normal(", "def kl_standard_normal((")),
          folder / "syntax.ipynb")
    write(submission(student, "import os\nos._exit(1)"), folder / "dies.ipynb")
    write(solution, folder / "alice" / "04_the_kl_term.ipynb")  # the solution itself, in a folder
    write(student, folder / "alice" / ".ipynb_checkpoints" / "04_the_kl_term-checkpoint.ipynb")
    (folder / "bob").mkdir()
    (folder / "bob" / "notes.txt").write_text("I did it on paper")
    (folder / "notes.txt").write_text("not a notebook")
    (folder / "broken.ipynb").write_text("{ this is not JSON")
    (folder / "list.ipynb").write_text("[1, 2, 3]")

    out = tmp_path / "grades.csv"
    r = cli("grade", folder, "--out", out, "--timeout", 8)
    assert r.returncode == 0, r.stderr
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == grading.GRADES_HEADER
    got = {row[0]: row[1:] for row in rows[1:]}
    assert len(got) == len(rows) - 1, rows  # one row per student here: one exercise each
    assert got["right"] == ["04_the_kl_term", "kl", "passed"]
    assert got["alice"] == ["04_the_kl_term", "kl", "passed"]
    assert got["wrong"][:2] == ["04_the_kl_term", "kl"] and "missing 1/2" in got["wrong"][2]
    assert got["untouched"][2] == "not attempted"
    assert got["loops"][2] == "timed out"
    assert "your kl_fn raised ValueError: mine" in got["raises"][2]
    assert got["syntax"][2].startswith("error: SyntaxError")
    assert got["dies"][2] == "error: the kernel died"
    assert got["bob"] == ["bob", "-", "error: no notebook (.ipynb) in this folder"]
    assert got["notes"] == ["notes", "-", "error: not a notebook (expected a .ipynb file)"]
    assert got["broken"][2].startswith("error: not a notebook (")
    assert got["list"][2].startswith("error: not a notebook (")
    assert "right: 04_the_kl_term: 1 of 1 passed" in r.stdout
    assert f"written: {out} ({len(rows) - 1} rows" in r.stdout


@pytest.mark.slow
def test_a_loop_that_ignores_the_interrupt_ends_its_notebook_and_nothing_else(tmp_path):
    """The kernel is stopped; the exercises after the loop say why they were not graded."""
    _, student = kl_cells()
    lme = nbformat.read(NOTEBOOKS / "02_the_lower_bound.ipynb", as_version=4)
    student.cells += [c for c in lme.cells if grading.exercise_of(c) == "log_mean_exp"]
    loop = ("    while True:\n        try:\n            sum(range(10**6))\n"
            "        except KeyboardInterrupt:\n            pass\n")
    stuck = RIGHT.replace("    return 0.5", loop + "    return 0.5")
    write(submission(student, stuck), tmp_path / "in" / "stuck.ipynb")
    write(submission(student, RIGHT), tmp_path / "in" / "fine.ipynb")
    grades = grading.grade_folder(tmp_path / "in", timeout=5)
    assert [(g.student, g.exercise, g.result) for g in grades] == [
        ("fine", "kl", "passed"), ("fine", "log_mean_exp", "passed"),
        ("stuck", "kl", "timed out"), ("stuck", "log_mean_exp", grading.KERNEL_STUCK)]


def test_grading_refuses_what_is_not_a_folder_of_submissions(tmp_path):
    r = cli("grade", tmp_path / "missing")
    assert r.returncode == 2 and "is not a folder" in r.stderr and r.stderr.count("\n") == 1
    (tmp_path / "empty").mkdir()
    r = cli("grade", tmp_path / "empty")
    assert r.returncode == 2 and "holds no submissions" in r.stderr
    r = cli("grade", tmp_path, "--timeout", "0")
    assert r.returncode == 2 and "--timeout" in r.stderr
