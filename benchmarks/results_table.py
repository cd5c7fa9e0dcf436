"""Summarise finished runs for the README's results table.

For each run folder: the data set, the epochs trained, the training time (the
sum of history.csv's seconds), the last epoch's held-out ELBO (the test set for
presets with n_validation = 0) and, if ``numpy-vae evaluate`` was run, its
test ELBO and importance-weighted log p(x).

Usage: python benchmarks/results_table.py runs/pytorch-example-s0 runs/... [--mean] [--plot F]
With --mean, also the mean and spread of the last ELBO over all the given runs
(for one preset trained with several seeds); with --plot, a PNG of the held-out
ELBO against training time for each run, with the importance-weighted log p(x)
estimates of runs that made them (``log_px_every``); with --plot and --log-px-only,
those estimates alone (the README's equal-training-time figure of the IWAE paper's
VAE and IWAE).
"""

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from numpy_vae.train import read_history


def summary(run):
    run = Path(run)
    history = read_history(run / "history.csv")
    config = json.loads((run / "checkpoint.json").read_text())["train_config"]
    row = {"run": run.name, "dataset": config["dataset"], "epochs": history[-1]["epoch"],
           "minutes": sum(r["seconds"] for r in history) / 60,
           "last_heldout_elbo": history[-1]["val_elbo"]}
    for path in sorted(run.glob("evaluation-k*.json")):
        result = json.loads(path.read_text())
        k = result["num_samples"]
        row["test_elbo"] = result["test_elbo"]
        row[f"log_px_k{k}"] = result["test_log_likelihood"]
        row[f"examples_k{k}"] = result["examples"]
        row["active_units"] = result["active_units"]
    return row


def curve(run):
    """A run's history and, per epoch, the training minutes so far."""
    history = read_history(run / "history.csv")
    return history, np.cumsum([r["seconds"] for r in history]) / 60


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--mean", action="store_true")
    ap.add_argument("--plot", type=Path, help="write held-out ELBO against minutes here")
    ap.add_argument("--reference", type=float, nargs="*", default=[],
                    help="draw these values (nats) as dashed lines on the plot")
    ap.add_argument("--reference-labels", nargs="*", default=[],
                    help="a legend entry for each --reference value, in order")
    ap.add_argument("--below", type=float, default=15,
                    help="the plot shows this many nats below the lowest final ELBO")
    ap.add_argument("--at-minutes", type=float,
                    help="also print each run's last log p(x) estimate made within this "
                    "many minutes of training (runs compared at equal training time)")
    ap.add_argument("--log-px-only", action="store_true",
                    help="plot only the log p(x) estimates, not the held-out ELBO")
    args = ap.parse_args()
    if len(args.reference_labels) > len(args.reference):
        ap.error(f"argument --reference-labels: expected at most {len(args.reference)} "
                 f"labels (one per --reference value), got {len(args.reference_labels)}")
    rows = [summary(r) for r in args.runs]
    for row in rows:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    if args.at_minutes is not None:
        for run in args.runs:
            history, minutes = curve(run)
            made = [(m, r) for m, r in zip(minutes, history)
                    if m <= args.at_minutes and np.isfinite(r.get("val_log_px", np.nan))]
            if made:
                m, r = made[-1]
                print(f"{run.name}: log p(x) {r['val_log_px']:.3f} at epoch {r['epoch']}, "
                      f"{m:.1f} min")
            else:
                print(f"{run.name}: no log p(x) estimate within {args.at_minutes:g} min")
    if args.mean:
        last = np.array([r["last_heldout_elbo"] for r in rows])
        print(f"mean last held-out ELBO over {len(last)} runs: {last.mean():.3f} "
              f"(min {last.min():.3f}, max {last.max():.3f})")
    if args.plot:
        fig = Figure(figsize=(6, 3.8))
        ax = fig.add_subplot()
        tops = []
        lows = [] if args.log_px_only else [row["last_heldout_elbo"] - args.below for row in rows]
        for run in args.runs:
            history, minutes = curve(run)
            log_px = np.array([r.get("val_log_px", np.nan) for r in history])
            if args.log_px_only:
                line = None
            else:
                line, = ax.plot(minutes, [r["val_elbo"] for r in history],
                                label=f"{run.name}: ELBO")
                tops.append(history[-1]["val_elbo"])
            if np.isfinite(log_px).any():
                done = np.isfinite(log_px)
                config = json.loads((run / "checkpoint.json").read_text())["train_config"]
                ax.plot(minutes[done], log_px[done], "o-", ms=3,
                        color=line.get_color() if line else None,
                        alpha=1 if args.log_px_only else 0.6,
                        label=f"{run.name}: log p(x), k = {config['log_px_samples']}, "
                        f"first {config['log_px_examples']} images")
                tops.append(log_px[done].max())
                lows.append(log_px[done].min() - 0.5)
        labels = args.reference_labels + [f"reference {v:g}" for v in args.reference]
        for value, label, style in zip(args.reference, labels, ["--", ":", "-."] * 9):
            ax.axhline(value, color="k", ls=style, lw=0.8, label=label)
            tops.append(value)
        ax.set_xlabel("training time (minutes)")
        ax.set_ylabel("log p(x) (nats)" if args.log_px_only
                      else "held-out ELBO or log p(x) (nats)")
        ax.set_ylim(min(lows), max(tops) + (0.5 if args.log_px_only else 1.5))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
        fig.savefig(args.plot, dpi=90, bbox_inches="tight")
        print(f"written: {args.plot}")


if __name__ == "__main__":
    main()
