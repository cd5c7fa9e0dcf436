"""The command line: ``numpy-vae train | evaluate | sample`` (also ``python -m numpy_vae``).

Errors in what the user asked for (unknown values, a folder from another
run, a damaged checkpoint, missing data) print one clear line and exit with
status 2; a diverged training exits with status 1. No tracebacks for those.
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, plots
from . import data as datasets
from .checkpoint import load_checkpoint, write_json
from .errors import InvalidValueError, NumpyVAEError
from .layers import INITS
from .presets import PRESETS
from .train import (
    TrainConfig,
    TrainingDiverged,
    estimate_log_px,
    evaluate_elbo,
    fit,
    fixed_inputs,
    load_run_data,
)
from .vae import DECODER_MEANS, DTYPES, HIDDEN_ACTIVATIONS, LIKELIHOODS


def _positive_ints(text):
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    return values


def build_parser():
    p = argparse.ArgumentParser(prog="numpy-vae", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"numpy_vae {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE (default: built-in shapes, ~1 minute)")
    t.add_argument("--preset", choices=sorted(PRESETS), help="a named configuration "
                   "(options given explicitly override it)")
    t.add_argument("--dataset", choices=datasets.DATASETS)
    t.add_argument("--likelihood", choices=LIKELIHOODS)
    t.add_argument("--decoder-mean", choices=DECODER_MEANS,
                   help="Gaussian likelihoods: the decoder mean as is, or through a sigmoid")
    t.add_argument("--preprocess", choices=datasets.PREPROCESSING,
                   help="grey levels, fixed-threshold or dynamic binarization, standardize")
    t.add_argument("--hidden", dest="hidden_dims", type=_positive_ints,
                   help="hidden widths, comma-separated, e.g. 400 or 200,200")
    t.add_argument("--latent", dest="latent_dim", type=int)
    t.add_argument("--activation", choices=HIDDEN_ACTIVATIONS)
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--lr-decay", type=float, help="learning-rate factor per epoch")
    t.add_argument("--beta", type=float, help="weight of the KL term")
    t.add_argument("--warmup", dest="warmup_epochs", type=int,
                   help="epochs of linear KL warm-up from 0 to beta")
    t.add_argument("--max-train", type=int, help="use only this many training images")
    t.add_argument("--dtype", choices=DTYPES)
    t.add_argument("--init", choices=INITS, help="weight initialisation (uniform: PyTorch's)")
    t.add_argument("--seed", type=int)
    t.add_argument("--log-px-every", type=int, help="every N epochs, estimate log p(x) of "
                   "held-out images by importance sampling (history.csv: val_log_px)")
    t.add_argument("--log-px-samples", type=int, help="importance samples for that (1000)")
    t.add_argument("--log-px-examples", type=int, help="held-out images for that (1000)")
    t.add_argument("--out", type=Path, help="run folder (default runs/<name>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--no-pictures", action="store_true")

    e = sub.add_parser("evaluate", help="test ELBO and importance-weighted log p(x) of a run")
    e.add_argument("run", type=Path)
    e.add_argument("-k", "--num-samples", type=int, default=1000,
                   help="importance samples per example (5000 in Burda et al. 2015)")
    e.add_argument("--max-examples", type=int, default=0, help="use the first N test images")
    e.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("sample", help="a grid of samples from the prior as PNG")
    s.add_argument("run", type=Path)
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, help="PNG path (default RUN/samples-seed<seed>.png)")

    for sp in (t, e):
        sp.add_argument("--data-dir", type=Path, help=f"data folder (default ${datasets.DATA_ENV}"
                        " or the per-user cache)")
        sp.add_argument("--no-download", action="store_true")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def config_from_args(args, base):
    """TrainConfig: the defaults, then ``base`` (a preset or a saved run's config), then the
    options given explicitly."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig(**{**base, **given})


def _load_run(run):
    model, _, meta = load_checkpoint(Path(run) / "checkpoint.npz")
    return model, TrainConfig(**meta["train_config"]), meta


def cmd_train(args):
    if args.resume:
        if args.out is None:
            raise InvalidValueError("--resume needs --out RUN_FOLDER, the run to continue")
        saved = load_checkpoint(args.out / "checkpoint.npz")[2]["train_config"]
        config = config_from_args(args, saved)
    else:
        config = config_from_args(args, PRESETS[args.preset] if args.preset else {})
    name = args.preset or config.dataset
    out = args.out or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"numpy_vae {__version__}: training on {config.dataset} -> {out}")
    data = load_run_data(config, args.data_dir, not args.no_download)
    model, history = fit(config, out, resume=args.resume, progress=not args.quiet, data=data)
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
    rng = np.random.default_rng(args.seed)
    elbo = evaluate_elbo(model, x, rng)
    k = args.num_samples
    ll = estimate_log_px(model, x, k, rng, progress=not args.quiet)
    D = model.data_dim
    result = {"epoch": meta["epoch"], "examples": len(x), "num_samples": k,
              "test_elbo": elbo["elbo"], "test_reconstruction": elbo["reconstruction"],
              "test_kl": elbo["kl"], "test_log_likelihood": ll,
              "bits_per_dim": -ll / (D * np.log(2))}
    print(f"test set: {len(x)} images of {config.dataset}, run epoch {result['epoch']}")
    print(f"  ELBO (one sampled z per image)   {elbo['elbo']:10.3f} nats "
          f"(reconstruction {elbo['reconstruction']:.3f}, KL {elbo['kl']:.3f})")
    print(f"  log p(x) (importance-weighted, k={k}) {ll:10.3f} nats, "
          f"{result['bits_per_dim']:.4f} bits/dim")
    path = args.run / f"evaluation-k{k}.json"
    write_json(path, result)
    print(f"written: {path}")
    return 0


def cmd_sample(args):
    model, config, _ = _load_run(args.run)
    if args.n <= 0:
        raise InvalidValueError(f"-n must be a positive integer, got {args.n}")
    shape = datasets.IMAGE_SHAPES[config.dataset]
    if config.preprocess == "standardize":  # needs the training set's statistics
        pre = load_run_data(config, args.data_dir, download=False)[3]
    else:
        pre = datasets.Preprocessor(config.preprocess, config.dtype)
    samples = pre.to_images(model.sample(args.n, np.random.default_rng(args.seed)))
    out = args.out or args.run / f"samples-seed{args.seed}.png"
    ncols = int(np.ceil(np.sqrt(args.n)))
    plots.save(plots.image_grid(samples.reshape(-1, *shape), ncols,
                                f"{args.n} samples (decoder means)"), out)
    print(f"written: {out}")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    command = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample}
    try:
        return command[args.command](args)
    except TrainingDiverged as e:
        print(f"numpy-vae: training diverged: {e}", file=sys.stderr)
        return 1
    except NumpyVAEError as e:  # what the user asked for is wrong; anything else is a bug

        print(f"numpy-vae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnumpy-vae: interrupted; the last finished epoch is saved, continue with "
              "--resume --out RUN", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
