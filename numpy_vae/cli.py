"""The command line: ``numpy-vae train|evaluate|sample|exercises|grade`` (``python -m numpy_vae``).

Exit statuses:
  0    done
  1    training diverged (the loss or a gradient became NaN or Inf; the last good
       checkpoint stays)
  2    what was asked is wrong: an unknown value, a folder in use or holding
       another run, a damaged checkpoint, missing data
  3    the operating system refused: disk full, permission denied, read-only
       folder, a name too long, ...
  130, 143, 129  stopped by SIGINT (Ctrl-C), SIGTERM or SIGHUP at a safe point
       (128 + the signal number); what was saved is printed
Each failure prints one line naming the path or option and the cause; a
traceback means a bug.
"""

import argparse
import contextlib
import dataclasses
import errno
import itertools
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, grading, plots
from . import data as datasets
from .checkpoint import load_checkpoint, write_json
from .errors import InvalidValueError, NumpyVAEError
from .layers import INITS
from .presets import PRESETS
from .runfolder import run_folder_lock
from .train import (
    OBJECTIVES,
    RESUMABLE,
    SCHEDULES,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    estimate_log_px,
    evaluate_elbo,
    fit,
    fixed_inputs,
    load_run_data,
)
from .vae import DECODER_MEANS, DTYPES, HIDDEN_ACTIVATIONS, LIKELIHOODS

EXIT_DIVERGED, EXIT_USAGE, EXIT_OS = 1, 2, 3
MAX_SAMPLES = 4096  # one PNG grid of at most 64 x 64 images
DEFAULTS = TrainConfig()


def _widths(text):
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one width, got {text!r}")
    return values


def _int_at_least(minimum, expected):
    """An argparse type: an integer >= ``minimum``; errors say ``expected``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def _default(name):
    value = getattr(DEFAULTS, name)
    return ",".join(map(str, value)) if isinstance(value, tuple) else value


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like the rest of the command line (exit status 2)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    p = Parser(prog="numpy-vae", description=__doc__.splitlines()[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"numpy_vae {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train", help="train a VAE (default: built-in shapes, ~1 minute)",
        epilog=f"Defaults are those of a preset if one is given, else the ones shown. With "
               f"--resume the run's saved settings are used; of them only "
               f"{', '.join('--' + n.replace('_', '-') for n in RESUMABLE)} may be changed "
               f"(for example a smaller --lr after a divergence).\n\n"
               + __doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)

    def option(flag, name, help_, **kw):
        t.add_argument(flag, dest=name, help=f"{help_} (default: {_default(name)})", **kw)

    t.add_argument("--preset", choices=sorted(PRESETS), help="a named configuration "
                   "(options given explicitly override it)")
    option("--dataset", "dataset", "data set", choices=datasets.DATASETS)
    option("--likelihood", "likelihood", "P(x|z)", choices=LIKELIHOODS)
    option("--decoder-mean", "decoder_mean", "Gaussian likelihoods: the decoder mean as is, "
           "or through a sigmoid", choices=DECODER_MEANS)
    option("--preprocess", "preprocess", "grey levels, fixed-threshold or dynamic "
           "binarization, standardize", choices=datasets.PREPROCESSING)
    option("--hidden", "hidden_dims", "hidden widths, comma-separated, e.g. 400 or 200,200",
           type=_widths)
    option("--latent", "latent_dim", "latent dimensions", type=_positive_int)
    option("--activation", "activation", "hidden activation", choices=HIDDEN_ACTIVATIONS)
    option("--epochs", "epochs", "epochs in all (with --resume: the new total)",
           type=_positive_int)
    option("--batch-size", "batch_size", "examples per step", type=_positive_int)
    option("--lr", "lr", "Adam's learning rate", type=float)
    option("--lr-decay", "lr_decay", "learning-rate factor per epoch", type=float)
    option("--beta", "beta", "weight of the KL term", type=float)
    option("--warmup", "warmup_epochs", "KL warm-up: the weight rises linearly from 0 to "
           "beta over the first W epochs, step by step, then stays at beta (history.csv: "
           "each epoch's mean weight); 0: no warm-up",
           type=_nonnegative_int)
    option("--max-train", "max_train", "use only this many training images (0: all)",
           type=_nonnegative_int)
    option("--validation", "n_validation", "training images held out for validation",
           type=_nonnegative_int)
    option("--dtype", "dtype", "floating type", choices=DTYPES)
    option("--init", "init", "weight initialisation (uniform: PyTorch's)", choices=INITS)
    option("--seed", "seed", "random seed", type=_nonnegative_int)
    option("--log-px-every", "log_px_every", "every N epochs, estimate log p(x) of held-out "
           "images by importance sampling (history.csv: val_log_px; 0: never)",
           type=_nonnegative_int)
    option("--log-px-samples", "log_px_samples", "importance samples for that",
           type=_positive_int)
    option("--log-px-examples", "log_px_examples", "held-out images for that",
           type=_positive_int)
    option("--objective", "objective", "elbo: the ELBO with the analytic KL; iwae: the "
           "importance-weighted bound L_k (Burda et al. 2015)", choices=OBJECTIVES)
    option("-k", "k", "samples per example of the iwae objective", type=_positive_int)
    option("--schedule", "schedule", "learning rate: exponential (lr * lr-decay**epoch) or "
           "iwae (3**i epochs at lr * 10**(-i/7), Burda et al. 2015)", choices=SCHEDULES)
    option("--adam-eps", "adam_eps", "Adam's epsilon", type=float)
    t.add_argument("--conditional", action="store_true", default=None,
                   help="a conditional VAE: encoder and decoder see the label (labelled data)")
    t.add_argument("--out", type=Path, help="run folder: new or empty, or the run to resume "
                   "(default: a new runs/<name>-<time>-seed<seed>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--no-pictures", action="store_true")

    e = sub.add_parser("evaluate", help="test ELBO and importance-weighted log p(x) of a run")
    e.add_argument("run", type=Path)
    e.add_argument("-k", "--num-samples", type=_positive_int, default=1000,
                   help="importance samples per example (5000 in Burda et al. 2015; "
                        "default: 1000)")
    e.add_argument("--max-examples", type=_nonnegative_int, default=0,
                   help="use the first N test images (default: 0, all)")
    e.add_argument("--seed", type=_nonnegative_int, default=0, help="(default: 0)")

    s = sub.add_parser("sample", help="a grid of samples from the prior as PNG")
    s.add_argument("run", type=Path)
    s.add_argument("-n", type=_positive_int, default=64,
                   help=f"number of samples, at most {MAX_SAMPLES} (default: 64)")
    s.add_argument("--seed", type=_nonnegative_int, default=0, help="(default: 0)")
    s.add_argument("--out", type=Path, help="PNG path, or a folder to write it in "
                   "(default: RUN/samples-seed<seed>.png)")
    s.add_argument("--label", type=_nonnegative_int,
                   help="conditional runs: draw this class (default: every class in turn)")

    x = sub.add_parser("exercises", help="write the student versions of the notebooks: each "
                       "solution replaced by its hint")
    x.add_argument("--notebooks", type=Path, default=Path("notebooks"),
                   help="the solution notebooks (default: notebooks)")
    x.add_argument("--out", type=Path, default=Path("exercises"),
                   help="folder for the exercise notebooks (default: exercises)")

    g = sub.add_parser("grade", help="run submitted exercise notebooks; one CSV row per student "
                       "and exercise")
    g.add_argument("folder", type=Path, help="a notebook per student, or a folder per student")
    g.add_argument("--out", type=Path, default=Path("grades.csv"),
                   help="the CSV to write (default: grades.csv)")
    g.add_argument("--timeout", type=_positive_int, default=grading.DEFAULT_TIMEOUT,
                   help="seconds each cell may run before it is interrupted "
                        f"(default: {grading.DEFAULT_TIMEOUT})")

    for sp in (t, e, s):
        sp.add_argument("--data-dir", type=Path, help=f"data folder (default ${datasets.DATA_ENV}"
                        " or the per-user cache)")
    for sp in (t, e):
        sp.add_argument("--no-download", action="store_true")
        sp.add_argument("--quiet", action="store_true",
                        help="no progress bars (they are off anyway when stderr is no terminal)")
    return p


def config_from_args(args, base):
    """TrainConfig: the defaults, then ``base`` (a preset or a saved run's config), then the
    options given explicitly."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig(**{**base, **given})


def _progress(args):
    return not args.quiet and sys.stderr.isatty()


def _load_run(run):
    model, _, meta = load_checkpoint(Path(run) / "checkpoint.npz")
    try:
        return model, TrainConfig(**meta["train_config"]), meta
    except TypeError as e:  # a setting this version does not know
        raise InvalidValueError(f"{run}: its training settings are not readable: {e}") from None


def new_run_folder(name, seed):
    """``runs/<name>-<time>-seed<seed>``, made here, so that two runs started together get
    two folders (the later one gets a suffix -2, -3, ...)."""
    base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    Path("runs").mkdir(exist_ok=True)
    for i in itertools.count(1):
        out = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            out.mkdir()
            return out
        except FileExistsError:
            continue


def cmd_train(args):
    if args.resume:
        if args.out is None:
            raise InvalidValueError("--resume needs --out RUN_FOLDER, the run to continue")
        if args.preset:
            raise InvalidValueError("--resume takes the run's own settings; --preset cannot "
                                    "be combined with it")
        # Read the run's settings under its lock: a training still writing there is named
        # (and its checkpoint is never read half-replaced); fit takes the lock again.
        with run_folder_lock(args.out) if args.out.is_dir() else contextlib.nullcontext():
            saved = load_checkpoint(args.out / "checkpoint.npz")[2]["train_config"]
        config = config_from_args(args, saved)
    else:
        config = config_from_args(args, PRESETS[args.preset] if args.preset else {})
    data = load_run_data(config, args.data_dir, not args.no_download)
    out = args.out or new_run_folder(args.preset or config.dataset, config.seed)
    print(f"numpy_vae {__version__}: training on {config.dataset} -> {out}", flush=True)
    model, history = fit(config, out, resume=args.resume, progress=_progress(args), data=data)
    if history:
        print(f"final validation ELBO {history[-1]['val_elbo']:.3f} nats")
    if not args.no_pictures:
        _, _, test, pre = data
        show = test.subset(np.arange(min(len(test), 5000)))
        x = fixed_inputs(pre, show.images, config.seed)
        paths = plots.run_pictures(model, pre.to_images, x, show, history, out,
                                   np.random.default_rng(config.seed))
        print("pictures:")
        for p in paths.values():
            print(f"  {p}")
    print(f"checkpoint: {out / 'checkpoint.npz'}  history: {out / 'history.csv'}")
    return 0


def cmd_evaluate(args):
    model, config, meta = _load_run(args.run)
    _, _, test, pre = load_run_data(config, args.data_dir, not args.no_download)
    images = test.images[:args.max_examples] if args.max_examples else test.images
    x = fixed_inputs(pre, images, config.seed)
    y = test.labels[:len(x)] if config.conditional else None
    rng = np.random.default_rng(args.seed)
    elbo = evaluate_elbo(model, x, rng, y=y)
    k = args.num_samples
    ll = estimate_log_px(model, x, k, rng, progress=_progress(args), y=y)
    active, _ = model.active_units(x, y=y)
    D = model.data_dim
    result = {"epoch": meta["epoch"], "examples": len(x), "num_samples": k, "seed": args.seed,
              "test_elbo": elbo["elbo"], "test_reconstruction": elbo["reconstruction"],
              "test_kl": elbo["kl"], "test_log_likelihood": ll,
              "bits_per_dim": -ll / (D * np.log(2)), "active_units": active}
    print(f"test set: {len(x)} images of {config.dataset}, run epoch {result['epoch']}")
    print(f"  ELBO (one sampled z per image)   {elbo['elbo']:10.3f} nats "
          f"(reconstruction {elbo['reconstruction']:.3f}, KL {elbo['kl']:.3f})")
    print(f"  log p(x) (importance-weighted, k={k}) {ll:10.3f} nats, "
          f"{result['bits_per_dim']:.4f} bits/dim"
          + (" (log p(x|y): the labels are given)" if y is not None else ""))
    print(f"  active units (Var_x of E_q[z_u] > 0.01)   {active} of {model.latent_dim}")
    if model.head.density:
        print("  (a density of continuous values, not a probability: it can exceed 0 and its "
              "bits/dim can be negative; not comparable with figures for 8-bit pixels)")
    path = args.run / f"evaluation-k{k}-seed{args.seed}-n{len(x)}.json"  # one file per setting
    write_json(path, result)
    print(f"written: {path}")
    return 0


def cmd_sample(args):
    model, config, _ = _load_run(args.run)
    if args.n > MAX_SAMPLES:
        raise InvalidValueError(f"-n must be at most {MAX_SAMPLES} (one PNG grid), "
                                f"got {args.n}")
    shape = datasets.IMAGE_SHAPES[config.dataset]
    if config.preprocess == "standardize":  # needs the training set's statistics
        pre = load_run_data(config, args.data_dir, download=False)[3]
    else:
        pre = datasets.Preprocessor(config.preprocess, config.dtype)
    y = None
    if model.num_labels:
        y = np.arange(args.n) % model.num_labels if args.label is None else np.full(
            args.n, args.label)
        if args.label is not None and args.label >= model.num_labels:
            raise InvalidValueError(f"--label must be below {model.num_labels} (the run's "
                                    f"classes), got {args.label}")
    elif args.label is not None:
        raise InvalidValueError(f"--label needs a conditional run; {args.run} was trained "
                                f"without labels")
    samples = pre.to_images(model.sample(args.n, np.random.default_rng(args.seed), y=y))
    out = args.out or args.run / f"samples-seed{args.seed}.png"
    if out.is_dir():
        out = out / f"samples-seed{args.seed}.png"
    elif out.suffix.lower() != ".png":
        out = out.with_name(out.name + ".png")
    ncols = int(np.ceil(np.sqrt(args.n)))
    plots.save(plots.image_grid(samples.reshape(-1, *shape), ncols,
                                f"{args.n} samples (decoder means)"), out)
    print(f"written: {out}")
    return 0


def cmd_exercises(args):
    paths = grading.write_exercises(args.notebooks, args.out)
    for path in paths:
        print(f"written: {path}")
    if not paths:
        print(f"no notebook in {args.notebooks} has a solution block: nothing written")
    return 0


def _report_grades(student, grades, seconds):
    passed = sum(g.result == grading.PASSED for g in grades)
    notebooks = ", ".join(dict.fromkeys(g.notebook for g in grades))
    print(f"{student}: {notebooks}: {passed} of {len(grades)} passed ({seconds:.0f} s)", flush=True)


def cmd_grade(args):
    grades = grading.grade_folder(args.folder, args.timeout, skip=[args.out],
                                  report=_report_grades)
    grading.write_grades(grades, args.out)
    students = len({g.student for g in grades})
    print(f"written: {args.out} ({len(grades)} rows, {students} students)")
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signum)


def main(argv=None):
    args = build_parser().parse_args(argv)
    command = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
               "exercises": cmd_exercises, "grade": cmd_grade}
    where = f"numpy-vae {args.command}"
    for s in (signal.SIGTERM, signal.SIGHUP):  # like Ctrl-C (training: at a safe point)
        signal.signal(s, _raise_interrupt)
    try:
        return command[args.command](args)
    except TrainingDiverged as e:
        print(f"{where}: training diverged: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except TrainingInterrupted as e:
        print(f"\n{where}: {e}", file=sys.stderr)
        return 128 + e.signum
    except NumpyVAEError as e:  # what the user asked for is wrong; anything else is a bug
        print(f"{where}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as e:
        cause = e.strerror or errno.errorcode.get(e.errno, str(e))
        path = f": {e.filename}" if e.filename else ""
        print(f"{where}: error: {cause}{path}", file=sys.stderr)
        return EXIT_OS
    except KeyboardInterrupt as e:
        signum = e.args[0] if e.args else signal.SIGINT
        print(f"\n{where}: interrupted by {signal.Signals(signum).name}; nothing more was "
              f"written", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
