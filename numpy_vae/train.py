"""The fit loop: batches -> loss_and_grads -> Adam, with validation, warm-up and checkpoints.

One run lives in one folder::

    run/checkpoint.npz   model, Adam state, RNG state, config, history (see checkpoint.py)
    run/checkpoint.json  the same metadata, readable
    run/history.csv      one row per epoch: training loss and its two terms, validation ELBO
                         (and, every log_px_every epochs, importance-weighted log p(x))
    run/*.png            the pictures (plots.py)

All randomness of training (shuffling, dynamic binarization, the noise eps)
comes from one ``np.random.Generator`` whose state is saved every epoch, so a
resumed run ends bitwise where the uninterrupted run would have.
"""

import csv
import dataclasses
import signal
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import data as datasets
from ._checks import check_choice, check_positive_float, check_positive_int
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .errors import InvalidValueError
from .optim import Adam, NonFiniteGradientError
from .runfolder import (  # noqa: F401 (RunFolderError and TrainingInterrupted: raised by fit)
    RunFolderError,
    TrainingInterrupted,
    check_new_run_folder,
    keep_freed_memory,
    remove_own_temporaries,
    run_folder_lock,
    stop_at_safe_points,
)
from .vae import VAE, ModelConfig

HISTORY_FIELDS = ("epoch", "beta", "lr", "train_loss", "train_reconstruction", "train_kl",
                  "val_elbo", "val_reconstruction", "val_kl", "seconds", "val_log_px",
                  "val_active_units", "train_ess")
OBJECTIVES = ("elbo", "iwae")
SCHEDULES = ("exponential", "iwae")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run. The defaults train a small model on the built-in
    "shapes" data in about a minute on 2 cores.

    The model's fields (likelihood, hidden_dims, ..., decoder_mean) are those of
    ``ModelConfig`` and are validated by it (``model_config()``); the rest here.
    """

    dataset: str = "shapes"
    likelihood: str = "bernoulli"
    preprocess: str = "grey"  # grey levels in [0, 1], "threshold", "dynamic" or "standardize"
    hidden_dims: tuple = (256,)
    latent_dim: int = 8
    activation: str = "relu"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay: float = 1.0  # the learning rate is multiplied by this after every epoch
    beta: float = 1.0
    warmup_epochs: int = 0  # the KL weight rises linearly from 0 to beta over these epochs
    n_validation: int = 1000
    max_train: int = 0  # use only the first max_train training images (0: all)
    dtype: str = "float32"
    seed: int = 0
    min_variance: float = 1e-4
    fixed_variance: float = 1.0
    init: str = "he-glorot"  # weight initialisation, see layers.init_dense
    decoder_mean: str = "identity"  # "sigmoid": Gaussian means in (0, 1), see VAE
    # Every log_px_every epochs (and after the last; 0: never), estimate log p(x) of the
    # first log_px_examples held-out images with log_px_samples importance samples.
    log_px_every: int = 0
    log_px_samples: int = 1000
    log_px_examples: int = 1000
    # The training objective: "elbo" (analytic KL, the default) or "iwae", the
    # importance-weighted bound L_k with k samples per example (Burda et al. 2015).
    objective: str = "elbo"
    k: int = 1
    # "exponential": lr * lr_decay**epoch; "iwae": Burda et al.'s stepwise schedule,
    # 3**i epochs at lr * 10**(-i/7) for i = 0, 1, ... (3,280 epochs for i <= 7)
    schedule: str = "exponential"
    adam_eps: float = 1e-8
    conditional: bool = False  # q(z|x, y) and P(x|z, y) see the label y

    def __post_init__(self):
        check_choice("dataset", self.dataset, datasets.DATASETS)
        model = self.model_config()  # validates the model's fields
        self.hidden_dims, self.dtype = model.hidden_dims, model.dtype
        check_choice("preprocess", self.preprocess, datasets.PREPROCESSING)
        if self.preprocess == "standardize" and model.head().needs_unit_interval:
            raise InvalidValueError(f"preprocess 'standardize' needs a Gaussian likelihood: the "
                                    f"{model.likelihood} likelihood needs x in [0, 1]")
        for name in ("epochs", "batch_size", "log_px_samples", "log_px_examples", "k"):
            check_positive_int(name, getattr(self, name))
        for name in ("lr", "lr_decay", "adam_eps"):
            check_positive_float(name, getattr(self, name))
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.objective == "elbo" and self.k != 1:
            raise InvalidValueError(f"k is the number of samples of the 'iwae' objective; with "
                                    f"objective 'elbo' it must be 1, got {self.k}")
        if not isinstance(self.conditional, bool):
            raise InvalidValueError(f"conditional must be True or False, got "
                                    f"{self.conditional!r}")
        if self.objective == "iwae" and (self.beta != 1 or self.warmup_epochs):
            raise InvalidValueError("the 'iwae' objective has no KL weight: beta must be 1 and "
                                    "warmup_epochs 0")
        if self.conditional and not datasets.NUM_LABELS[self.dataset]:
            raise InvalidValueError(f"conditional needs a labelled data set; "
                                    f"{self.dataset!r} has no labels")
        check_positive_float("beta", self.beta, allow_zero=True)
        for name in ("warmup_epochs", "n_validation", "max_train", "seed", "log_px_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidValueError(f"{name} must be an integer >= 0, got {value!r}")

    def model_config(self):
        """The ``ModelConfig`` of this run's model (data_dim from the data set)."""
        fields = ({f.name for f in dataclasses.fields(ModelConfig)}
                  & {f.name for f in dataclasses.fields(TrainConfig)})
        num_labels = datasets.NUM_LABELS[self.dataset] if self.conditional else 0
        return ModelConfig(data_dim=datasets.data_dim(self.dataset), num_labels=num_labels,
                           **{f: getattr(self, f) for f in fields})

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    def lr_at(self, epoch):
        """The learning rate in ``epoch`` (0-based), by ``schedule``."""
        if self.schedule == "iwae":  # stage i lasts 3**i epochs: it starts at (3**i - 1) / 2
            stage = int(np.floor(np.log(2 * epoch + 1) / np.log(3) + 1e-9))
            return self.lr * 10 ** (-stage / 7)
        return self.lr * self.lr_decay**epoch

    def beta_at(self, step, steps_per_epoch):
        """KL weight at training step ``step`` (0-based, counted over the whole run):
        ``beta * step / (warmup_epochs * steps_per_epoch)`` during the warm-up, rising
        step by step from 0 (as notebook 08 ramps it), then ``beta``."""
        if self.warmup_epochs == 0:
            return self.beta
        return self.beta * min(1.0, step / (self.warmup_epochs * steps_per_epoch))


def all_finite(arrays):
    """True if no array of the dict holds NaN or Inf."""
    return all(np.isfinite(a).all() for a in arrays.values())


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN or Inf; the parameters were not updated with it."""


# The settings that may change when a run is resumed; any other difference is refused.
RESUMABLE = ("epochs", "lr", "lr_decay")


def _last_good(ckpt_path, epochs_done):
    if epochs_done == 0:
        return "No checkpoint had been written yet."
    return f"{ckpt_path} keeps the last good checkpoint (epoch {epochs_done})."


# ---------------------------------------------------------------------------- data


def load_run_data(config, data_dir=None, download=True):
    """Training, validation and test ``Dataset``s for ``config``, and its ``Preprocessor``."""
    train = datasets.load_dataset(config.dataset, "train", data_dir, download)
    test = datasets.load_dataset(config.dataset, "test", data_dir, download)
    split_rng = np.random.default_rng([config.seed, 7])
    n_val = min(config.n_validation, len(train) // 5)
    train_idx, val_idx = datasets.train_validation_split(len(train), n_val, split_rng)
    if config.max_train:
        train_idx = train_idx[:config.max_train]
    train_set, val_set = train.subset(train_idx), train.subset(val_idx)
    pre = datasets.Preprocessor(config.preprocess, config.dtype, train_set.images)
    return train_set, val_set, test, pre


def fixed_inputs(pre, images, seed):
    """Inputs for evaluation: dynamic binarization drawn once with a fixed seed."""
    return pre(images, np.random.default_rng([seed, 99]))


def evaluate_elbo(model, x, rng, batch_size=1000, y=None):
    """Mean ELBO, reconstruction term and KL over ``x`` (labels ``y`` for a conditional
    model) with sampled z (never z = mu)."""
    rec_sum = kl_sum = 0.0
    for i in range(0, len(x), batch_size):
        rec, kl = model.elbo_terms(x[i:i + batch_size], rng=rng,
                                   y=None if y is None else y[i:i + batch_size])
        rec_sum += float(rec.sum())
        kl_sum += float(kl.sum())
    n = len(x)
    return {"elbo": (rec_sum - kl_sum) / n, "reconstruction": rec_sum / n, "kl": kl_sum / n}


def estimate_log_px(model, x, num_samples, rng, progress=False, rows_per_call=20_000, y=None):
    """Mean importance-weighted estimate of log p(x) over ``x`` (``VAE.log_likelihood``;
    log p(x|y) with the labels ``y`` of a conditional model).

    Runs ``rows_per_call // num_samples`` images at a time, with a progress bar
    if ``progress``.
    """
    keep_freed_memory()
    batch = max(1, rows_per_call // num_samples)
    total = 0.0
    with tqdm(total=len(x), desc=f"log p(x), k={num_samples}", unit="image",
              disable=not progress, leave=False) as bar:
        for i in range(0, len(x), batch):
            ll = model.log_likelihood(x[i:i + batch], num_samples=num_samples, rng=rng,
                                      y=None if y is None else y[i:i + batch])
            total += float(ll.sum())
            bar.update(len(ll))
    return total / len(x)


# ---------------------------------------------------------------------------- the run


def write_history(path, history):
    def write(f):
        text = [",".join(HISTORY_FIELDS)]
        text += [",".join(repr(row.get(k, float("nan"))) for k in HISTORY_FIELDS)
                 for row in history]  # val_log_px only in the epochs that estimated it
        f.write(("\n".join(text) + "\n").encode())
    atomic_write(path, write)


def read_history(path):
    """Rows of ``history.csv`` as dicts of floats (epoch as int)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in rows]


def start_run(config, out):
    """A new model, optimizer, RNG and empty history for a fresh run in ``out``."""
    check_new_run_folder(out)
    rng = np.random.default_rng(config.seed)
    model = VAE.from_config(config.model_config(), rng)
    return model, Adam(lr=config.lr, eps=config.adam_eps), rng, []


def resume_run(config, out):
    """Model, optimizer, RNG and history from the checkpoint in ``out``.

    The saved config must equal ``config`` except for the ``RESUMABLE`` settings.
    """
    model, opt, meta = load_checkpoint(out / "checkpoint.npz")
    try:
        saved = TrainConfig(**{**meta["train_config"],
                               **{name: getattr(config, name) for name in RESUMABLE}})
    except TypeError as e:  # a setting this version does not know
        raise CheckpointError(f"cannot resume {out}: {e}") from None
    if saved != config:
        diff = [f"{f.name} (run: {getattr(saved, f.name)!r}, asked: {getattr(config, f.name)!r})"
                for f in dataclasses.fields(TrainConfig)
                if getattr(saved, f.name) != getattr(config, f.name)]
        raise CheckpointError(f"cannot resume {out}: its config differs in " + ", ".join(diff)
                              + f" (only {', '.join(RESUMABLE)} may change on resume)")
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng_state"]
    return model, opt, rng, meta["history"]


def train_epoch(model, opt, train, pre, config, epoch, rng, progress=True, stop=None):
    """One pass over the shuffled training set; the mean loss and terms per example.

    ``stop`` (from ``stop_at_safe_points``) is looked at after every step; when a
    signal has come, the epoch ends early and returns None.
    """
    sums = {}  # history field -> its sum over the epoch's examples
    n_batches = -(-len(train) // config.batch_size)
    bar = tqdm(datasets.minibatches(len(train), config.batch_size, rng), total=n_batches,
               desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False,
               unit="batch")
    for step, idx in enumerate(bar, start=epoch * n_batches + 1):
        x = pre(train.images[idx], rng)  # (B, D)
        y = train.labels[idx] if config.conditional else None  # (B,)
        beta = config.beta_at(step - 1, n_batches)
        if config.objective == "iwae":  # no split into two terms: the weights' ESS instead
            loss, grads, terms = model.iwae_loss_and_grads(x, config.k, rng=rng, y=y)
            parts = {"train_ess": terms["ess"].sum()}
        else:
            loss, grads, terms = model.loss_and_grads(x, rng=rng, beta=beta, y=y)
            parts = {"train_reconstruction": terms["reconstruction"].sum(),
                     "train_kl": terms["kl"].sum()}
        try:
            if not np.isfinite(loss):
                raise NonFiniteGradientError(f"the loss is {loss}")
            opt.step(model.params, grads)  # refuses NaN/Inf gradients, changing nothing
        except NonFiniteGradientError as e:
            raise TrainingDiverged(f"at step {step} (epoch {epoch + 1}): {e}") from None
        parts.update(train_loss=loss * len(idx), beta=beta * len(idx))
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + float(value)
        bar.set_postfix({name[6:] if name.startswith("train_") else name: f"{v / len(idx):.2f}"
                         for name, v in parts.items()}, refresh=False)
        if stop is not None and stop["signum"] is not None:
            bar.close()
            return None
    return {"lr": opt.lr, **{name: total / len(train) for name, total in sums.items()}}


def fit(config, out, resume=False, data_dir=None, download=True, progress=True, log=print,
        data=None):
    """Train a VAE as ``config`` says, writing the run into the folder ``out``.

    With ``resume=True`` continue the run in ``out`` from its checkpoint; its
    config must equal ``config`` except for the ``RESUMABLE`` settings. ``data``
    is what ``load_run_data(config, ...)`` returned, if the caller has it
    already (else it is loaded here). Returns ``(model, history)``.

    The folder is locked for the whole run (``run_folder_lock``). Raises
    ``TrainingDiverged`` if the loss or a gradient becomes non-finite and
    ``TrainingInterrupted`` on SIGINT, SIGTERM or SIGHUP; either way the last
    good checkpoint stays.
    """
    keep_freed_memory()
    out = Path(out)
    if not resume and not (out / "checkpoint.npz").exists():
        check_new_run_folder(out)  # before a lock file is made in the user's folder
    with run_folder_lock(out), stop_at_safe_points() as stop:
        remove_own_temporaries(out)
        model, opt, rng, history = (resume_run if resume else start_run)(config, out)
        if len(history) >= config.epochs:
            log(f"nothing to train: {out} has finished {len(history)} epochs "
                f"(epochs={config.epochs})")
        train, val, test, pre = (load_run_data(config, data_dir, download) if data is None
                                 else data)
        # With n_validation = 0 (all training images are used, as in the papers) the
        # per-epoch check runs on the test set instead; history.csv calls it "val" either way.
        held = val if len(val) else test
        x_val = fixed_inputs(pre, held.images, config.seed)
        y_val = held.labels if config.conditional else None
        for epoch in range(len(history), config.epochs):
            row = run_epoch(model, opt, train, pre, (x_val, y_val), config, epoch, rng, progress,
                            stop, out)
            history.append(row)
            save_checkpoint(out / "checkpoint.npz", model, opt, {
                "epoch": epoch + 1, "train_config": config.to_dict(), "history": history,
                "rng_state": rng.bit_generator.state})
            write_history(out / "history.csv", history)
            terms = (f"ess {row['train_ess']:5.2f}" if "train_ess" in row else
                     f"rec {row['train_reconstruction']:8.3f}, kl {row['train_kl']:6.3f}")
            log(f"epoch {epoch + 1:3d}/{config.epochs}  loss {row['train_loss']:8.3f}  "
                f"({terms}, beta {row['beta']:.2f})  val ELBO {row['val_elbo']:8.3f}  "
                f"active {row['val_active_units']:.0f}  {row['seconds']:.1f}s"
                + (f"  log p(x) {row['val_log_px']:.3f}" if "val_log_px" in row else ""))
            if stop["signum"] is not None:
                _interrupted(stop["signum"], out, epoch + 1)
    return model, history


def _interrupted(signum, out, epochs_done):
    saved = (f"{out / 'checkpoint.npz'} holds epoch {epochs_done}: continue with "
             f"numpy-vae train --resume --out {out}" if epochs_done
             else "no checkpoint was written yet (nothing to resume)")
    raise TrainingInterrupted(
        f"training stopped by {signal.Signals(signum).name}; {saved}", signum)


def run_epoch(model, opt, train, pre, held_out, config, epoch, rng, progress, stop, out):
    """Train one epoch, then validate on ``held_out = (x, y)``: the epoch's row of the history.

    Raises ``TrainingDiverged`` or ``TrainingInterrupted`` before anything of the
    epoch is saved.
    """
    t0 = time.perf_counter()
    x_val, y_val = held_out
    opt.lr = config.lr_at(epoch)
    advice = (f"{_last_good(out / 'checkpoint.npz', epoch)} Try a smaller learning rate "
              f"(was {opt.lr:g}): numpy-vae train --resume --out {out} --lr "
              f"{config.lr / 10:g}" if epoch else "Try a smaller learning rate "
              f"(was {opt.lr:g}, for example --lr {config.lr / 10:g}).")
    try:
        terms = train_epoch(model, opt, train, pre, config, epoch, rng, progress, stop)
    except TrainingDiverged as e:
        raise TrainingDiverged(f"non-finite loss or gradient {e}; the parameters were not "
                               f"updated with it. {advice}") from None
    if terms is None:
        _interrupted(stop["signum"], out, epoch)
    row = {"epoch": epoch + 1, **terms}
    val_terms = evaluate_elbo(model, x_val, np.random.default_rng([config.seed, epoch, 1]),
                              y=y_val)
    row.update({f"val_{k}": v for k, v in val_terms.items()}, seconds=time.perf_counter() - t0)
    row["val_active_units"] = model.active_units(x_val, y=y_val)[0]
    if config.log_px_every and ((epoch + 1) % config.log_px_every == 0
                                or epoch + 1 == config.epochs):  # not in "seconds"
        n = config.log_px_examples
        row["val_log_px"] = estimate_log_px(
            model, x_val[:n], config.log_px_samples, np.random.default_rng([config.seed, epoch, 2]),
            progress, y=None if y_val is None else y_val[:n])
    row = {k: (v if k == "epoch" else float(v)) for k, v in row.items()}
    if not (all_finite(model.params) and all_finite(opt.m) and all_finite(opt.v)
            and np.isfinite(row["val_elbo"])):
        step = (epoch + 1) * -(-len(train) // config.batch_size)
        raise TrainingDiverged(
            f"the parameters, Adam's moments or the validation ELBO overflowed by the end of "
            f"epoch {epoch + 1} (step {step}; a squared gradient beyond the float range). "
            f"{advice}")
    return row
