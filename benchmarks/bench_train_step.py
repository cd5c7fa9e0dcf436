"""Time numpy_vae's training step against the same model in PyTorch (CPU, eager).

The model is the one of PyTorch's VAE example (examples/vae/main.py):
784-400-20 with ReLU, a Bernoulli decoder on grey-level MNIST, Adam with
lr 1e-3, batch 128, float32. One training step is: convert a uint8 batch to
float32 in [0, 1], loss and gradients, one Adam step.

Reduction: numpy_vae's loss is the batch *mean* of -ELBO. The example sums
BCE + KL over the batch; here the PyTorch loss is that sum divided by the
batch size, i.e. the same mean, so both runs take the same Adam steps (Adam
is nearly scale-invariant, but its eps is not). The decoder is the example's:
sigmoid, then ``F.binary_cross_entropy`` (numpy_vae works on the logits).

The two are run interleaved (A B B A A B ...) in one process, on the same
batches and with the same number of threads (``torch.set_num_threads``,
threadpoolctl for NumPy's BLAS; numpy_vae's Adam runs on one thread), and
compared as ratios of medians, since the machine may be shared and absolute
times drift. Each library initialises its weights its own way.
Like ``numpy-vae train``, the script first asks glibc's malloc to keep freed
memory (``train.keep_freed_memory``); the setting is per process, so PyTorch
runs with it too.
On a machine where other jobs hold the cores, multi-threaded timings of both
libraries are dominated by worker threads waiting for each other; trust the
1-thread figures there.

Parts (``--parts``, comma-separated):
  speed    seconds per epoch (469 steps of 128) for both, their ratio, the share
           of numpy_vae's step spent in matrix products (the step's matrix
           products, same shapes, timed on their own between the steps)
  scaling  step time against batch size (hidden 400) and hidden width (batch
           128): a table and a log-log plot, benchmarks/scaling.png
  memory   peak resident memory of one full MNIST epoch of numpy_vae, in a
           fresh process without PyTorch
  breakdown  (not in the default) where numpy_vae's step spends its time: each
           piece timed inside the step, next to the step's matrix products and
           Adam timed on their own, for each n of --threads
  adam     (not in the default) numpy_vae's step with Adam's update split over
           n threads (as the library once did) against the library's one
           thread, BLAS on n threads, for each n of --threads

Usage:
  NUMPY_VAE_DATA=/path/to/data python benchmarks/bench_train_step.py --repeats 21
  python benchmarks/bench_train_step.py --parts speed --threads 1 --steps 50 --repeats 15

PyTorch is optional (``pip install torch``); without it only numpy_vae's
figures are printed.
"""

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import numpy_vae
from numpy_vae import VAE, Adam, optim
from numpy_vae import distributions as dist
from numpy_vae.layers import MLP
from numpy_vae.train import keep_freed_memory

torch = None  # imported by import_torch(), never in the memory-measuring child process

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:
    threadpool_info = threadpool_limits = None

HERE = Path(__file__).resolve().parent
PARTS = ("speed", "scaling", "memory", "breakdown", "adam")
STEPS_PER_EPOCH = 469  # ceil(60000 / 128)
D, H, Z = 784, 400, 20


# ----------------------------------------------------------------------------- data


def load_images(n_fallback=60000):
    """MNIST training images as uint8 (N, 28, 28), or random ones with a warning."""
    try:
        from numpy_vae.data import load_dataset
        return load_dataset("mnist", "train", download=False).images, "MNIST train"
    except Exception as e:  # no loader, no files: the timing does not depend on the pixels
        print(f"WARNING: MNIST not loaded ({type(e).__name__}: {str(e)[:120]}); "
              "timing on random uint8 images instead. Set NUMPY_VAE_DATA to the folder "
              "that holds mnist/.", file=sys.stderr)
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, size=(n_fallback, 28, 28), dtype=np.uint8), "random"


def to_float(batch):
    """uint8 (B, 28, 28) -> float32 (B, 784) in [0, 1], one batch at a time."""
    x = batch.reshape(len(batch), -1).astype(np.float32)  # (B, D)
    x /= 255
    return x


def batches(images, batch_size, steps, rng):
    """``steps`` random batches (uint8 views are copied by fancy indexing)."""
    return [images[rng.integers(0, len(images), batch_size)] for _ in range(steps)]


# ----------------------------------------------------------------------------- the two steps


def numpy_trainer(hidden=H, seed=0):
    """A numpy_vae model and optimizer; returns ``step(uint8 batch) -> loss``, the model."""
    model = VAE(D, (hidden,), Z, likelihood="bernoulli", activation="relu",
                dtype=np.float32, rng=np.random.default_rng(seed))
    opt = Adam(lr=1e-3)
    rng = np.random.default_rng(seed + 1)

    def step(batch):
        loss, grads = model.loss_and_grads(to_float(batch), rng=rng)
        opt.step(model.params, grads)
        return loss

    return step, model


def import_torch():
    """Import PyTorch into the global ``torch`` if it is installed; return it or None."""
    global torch
    try:
        import torch as _torch
    except ImportError:  # PyTorch is only for the comparison
        return None
    torch = _torch
    return torch


def torch_trainer(hidden=H, seed=0):
    """PyTorch's examples/vae model with Adam; returns ``step(uint8 batch) -> loss``.

    The example's fc21 and fc22 (mu and logvar) are numpy_vae's one (H, 2Z) head.
    """
    import torch.nn.functional as F
    from torch import nn

    class TorchVAE(nn.Module):
        def __init__(self, hidden):
            super().__init__()
            self.fc1 = nn.Linear(D, hidden)
            self.fc21 = nn.Linear(hidden, Z)
            self.fc22 = nn.Linear(hidden, Z)
            self.fc3 = nn.Linear(Z, hidden)
            self.fc4 = nn.Linear(hidden, D)

        def forward(self, x):
            h1 = F.relu(self.fc1(x))
            mu, logvar = self.fc21(h1), self.fc22(h1)
            z = mu + torch.randn_like(logvar) * torch.exp(0.5 * logvar)
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

    torch.manual_seed(seed)
    model = TorchVAE(hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch):
        x = torch.from_numpy(to_float(batch))  # shares memory, no copy
        recon, mu, logvar = model(x)
        bce = F.binary_cross_entropy(recon, x, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = (bce + kld) / len(x)  # the batch mean, like numpy_vae
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


def matmul_timer(model, batch_size, seed=0):
    """The matrix products of one numpy_vae step, same shapes; returns ``run()``.

    Forward ``x @ W`` for every layer; backward ``x.T @ dout`` (into a flat
    gradient buffer, as the model does) for every layer and ``dout @ W.T`` for
    every layer but the encoder's first (its input is the data).
    """
    rng = np.random.default_rng(seed)
    flat = np.empty_like(model.flat_params)
    ops, start = [], 0
    for net, skip_first_dx in ((model.encoder, True), (model.decoder, False)):
        for i in range(net.n_layers):
            W = model.params[net.names(i)[0]]
            I, O = W.shape
            x = rng.random((batch_size, I), dtype=np.float32)
            dout = rng.standard_normal((batch_size, O), dtype=np.float32)
            dW = flat[start:start + W.size].reshape(W.shape)
            start += W.size
            ops.append((np.matmul, x, W, None))
            ops.append((np.matmul, x.T, dout, dW))
            if i > 0 or not skip_first_dx:
                ops.append((np.matmul, dout, W.T, None))

    def run():
        for f, a, b, out in ops:
            f(a, b, out=out)

    return run


# ----------------------------------------------------------------------------- timing


class Threads:
    """Use ``n`` threads in NumPy's BLAS and in PyTorch within a ``with`` block."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self._limit = threadpool_limits(self.n) if threadpool_limits else None
        if torch is not None:
            self._torch = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self._limit is not None:
            self._limit.unregister()
        if torch is not None:
            torch.set_num_threads(self._torch)


def time_block(step, data):
    """Wall-clock and CPU (all threads of the process) seconds per step over ``data``."""
    t, cpu = time.perf_counter(), time.process_time()
    for batch in data:
        step(batch)
    return (time.perf_counter() - t) / len(data), (time.process_time() - cpu) / len(data)


def interleaved(steps, data_for_repeat, repeats):
    """Time every step function on the same batches, alternating the order each repeat.

    ``steps`` maps a name to ``step(batch)``; ``data_for_repeat(r)`` gives the
    batches of repeat r. Returns {name: [wall seconds per step, one per repeat]}
    and the same for CPU seconds.
    """
    names = list(steps)
    wall, cpu = {name: [] for name in names}, {name: [] for name in names}
    for name in names:  # warm-up: first calls allocate, BLAS spins its threads up
        time_block(steps[name], data_for_repeat(-1)[:5])
    for r in range(repeats):
        data = data_for_repeat(r)
        for name in (names if r % 2 == 0 else names[::-1]):
            w, c = time_block(steps[name], data)
            wall[name].append(w)
            cpu[name].append(c)
    return wall, cpu


# ----------------------------------------------------------------------------- machine


def machine():
    """CPU model, cores, BLAS, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        cpu = (f"{fields['model name']} (family {fields.get('cpu family', '?')}, "
               f"model {fields.get('model', '?')}, {fields.get('cpu MHz', '?')} MHz)")
    except (OSError, KeyError):
        pass
    blas = "unknown"
    if threadpool_info is not None:
        infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        blas = ", ".join(f"{i['internal_api']} {i['version']} ({i.get('architecture')}, "
                         f"{i['num_threads']} threads)" for i in infos) or blas
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "numpy_vae": numpy_vae.__version__, "numpy BLAS": blas,
        "load average (1 min) at start": round(os.getloadavg()[0], 2),
    }
    if torch is not None:
        cfg = torch.__config__.show()
        backend = "MKL" if "USE_MKL=ON" in cfg else "OpenBLAS" if "openblas" in cfg.lower() else "?"
        info["torch"] = f"{torch.__version__} (BLAS {backend})"
    return info


def peak_rss_mb():
    """Peak resident memory of this process in MB.

    VmHWM from /proc (Linux) belongs to this program's memory map alone;
    ru_maxrss, the fallback, keeps the parent's peak across fork and exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------- parts


def part_speed(images, args):
    print("\n## Speed: seconds per epoch (469 steps of 128), interleaved\n")
    rows = []
    for n in args.threads:
        rng = np.random.default_rng(n)
        data = [batches(images, args.batch_size, args.steps, rng) for _ in range(args.repeats)]
        np_step, model = numpy_trainer()
        steps = {"numpy_vae": np_step}
        if torch is not None and not args.no_torch:
            steps["pytorch"] = torch_trainer()
        mm = matmul_timer(model, args.batch_size)
        steps["numpy_vae matmuls only"] = lambda batch, mm=mm: mm()
        with Threads(n):
            times, cpu = interleaved(steps, lambda r, data=data: data[r], args.repeats)
        med = {k: float(np.median(v)) for k, v in times.items()}
        row = {"threads": n, "numpy_vae_epoch_s": med["numpy_vae"] * STEPS_PER_EPOCH,
               "matmul_share": med["numpy_vae matmuls only"] / med["numpy_vae"]}
        if "pytorch" in med:
            per_repeat = np.array(times["numpy_vae"]) / np.array(times["pytorch"])
            row.update(pytorch_epoch_s=med["pytorch"] * STEPS_PER_EPOCH,
                       ratio=med["numpy_vae"] / med["pytorch"],
                       cpu_ratio=float(np.median(cpu["numpy_vae"]) / np.median(cpu["pytorch"])),
                       ratio_per_repeat=(float(per_repeat.min()), float(np.median(per_repeat)),
                                         float(per_repeat.max())))
        rows.append(row)
        if args.verbose:
            for k, v in times.items():
                print(f"  {n} thr {k:24s} ms/step: " + " ".join(f"{1e3 * t:.2f}" for t in v))
                print(f"  {n} thr {k:24s} CPU ms:  " + " ".join(f"{1e3 * t:.2f}" for t in cpu[k]))

    print("| threads | numpy_vae s/epoch | PyTorch s/epoch | numpy_vae / PyTorch "
          "| per repeat (min, median, max) | same, CPU time | matmul share of numpy_vae |")
    print("|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        has = "ratio" in r
        pt = f"{r['pytorch_epoch_s']:.2f}" if has else "-"
        ratio = f"**{r['ratio']:.2f}**" if has else "-"
        spread = "({:.2f}, {:.2f}, {:.2f})".format(*r["ratio_per_repeat"]) if has else "-"
        cpu_ratio = f"{r['cpu_ratio']:.2f}" if has else "-"
        print(f"| {r['threads']} | {r['numpy_vae_epoch_s']:.2f} | {pt} | {ratio} | {spread} "
              f"| {cpu_ratio} | {100 * r['matmul_share']:.0f}% |")
    print(f"\n{args.steps} steps x {args.repeats} repeats per cell; medians over repeats; "
          "epoch = 469 x median wall-clock seconds per step. CPU time counts every thread "
          "of the process, spin-waiting included.")
    return rows


def with_split_adam(step, threads):
    """``step`` with Adam's flat update split into ``threads`` slices run at once.

    NumPy releases the GIL in its loops, so the slices run on the cores in
    parallel; the numbers are the same. Wraps ``optim._adam_update`` during
    the step only.
    """
    if threads == 1:
        return step  # nothing to split: both columns measure the same, the method's spread
    one = optim._adam_update
    pool = ThreadPoolExecutor(threads - 1)

    def split(p, g, m, v, b1, b2, lr_t, eps_t, work):
        bounds = [p.size * i // threads for i in range(threads + 1)]

        def part(lo, hi):
            one(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], b1, b2, lr_t, eps_t,
                (work[0][lo:hi], work[1][lo:hi]))

        futures = [pool.submit(part, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
        part(bounds[0], bounds[1])  # this thread does the first slice meanwhile
        for f in futures:
            f.result()

    def split_step(batch):
        optim._adam_update = split
        try:
            return step(batch)
        finally:
            optim._adam_update = one

    return split_step


def part_adam(images, args):
    print("\n## Adam split over the BLAS threads inside the step: ms per step, interleaved\n")
    print("| BLAS threads | Adam split over them | Adam on 1 (numpy_vae) | matrix products alone |")
    print("|---:|---:|---:|---:|")
    for n in args.threads:
        rng = np.random.default_rng(n)
        data = [batches(images, args.batch_size, args.steps, rng) for _ in range(args.repeats)]
        one, model = numpy_trainer()
        mm = matmul_timer(model, args.batch_size)
        steps = {"split": with_split_adam(numpy_trainer()[0], n), "one": one,
                 "mm": lambda batch, mm=mm: mm()}
        with Threads(n):
            times, _ = interleaved(steps, lambda r, data=data: data[r], args.repeats)
        med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        print(f"| {n} | {med['split']:.2f} | {med['one']:.2f} | {med['mm']:.2f} |")


@contextlib.contextmanager
def timing(pieces, spent):
    """Within the block, every call of the functions in ``pieces`` adds its time to ``spent``.

    ``pieces`` maps a name to ``(owner, attribute)`` pairs: module functions or
    class methods, replaced by timed wrappers and restored on exit.
    """
    originals = []

    def timed(f, name):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    for name, targets in pieces.items():
        for owner, attr in targets:
            originals.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, timed(getattr(owner, attr), name))
    try:
        yield
    finally:
        for owner, attr, f in reversed(originals):
            setattr(owner, attr, f)


def part_breakdown(images, args):
    print("\n## Where numpy_vae's step spends its time: ms per step\n")
    this = sys.modules[__name__]
    pieces = {  # none of these calls another of them
        "uint8 batch to float32": [(this, "to_float")],
        "data check (dtype, shape, [0, 1])": [(VAE, "_check_x")],
        "encoder and decoder forward (products, biases, ReLU)": [(MLP, "forward")],
        "encoder and decoder backward (products, bias sums, ReLU)": [(MLP, "backward")],
        "Bernoulli log-likelihood": [(dist, "bernoulli_log_likelihood")],
        "Bernoulli log-likelihood backward": [(dist, "bernoulli_log_likelihood_backward")],
        "reparameterization and KL, forward and backward": [
            (dist, f) for f in ("reparameterize", "reparameterize_backward",
                                "kl_standard_normal", "kl_standard_normal_backward")],
        "Adam step": [(Adam, "step")],
    }
    n_steps = args.steps * args.repeats
    columns = {}
    for n in args.threads:
        step, model = numpy_trainer()
        data = batches(images, args.batch_size, n_steps, np.random.default_rng(n))
        spent = dict.fromkeys(pieces, 0.0)
        with Threads(n), timing(pieces, spent):
            for batch in data[:5]:  # warm-up
                step(batch)
            spent.update(dict.fromkeys(pieces, 0.0))
            t = time.perf_counter()
            for batch in data:
                step(batch)
            total = time.perf_counter() - t
            mm = matmul_timer(model, args.batch_size)
            t = time.perf_counter()
            for _ in range(n_steps):
                mm()
            mm_alone = time.perf_counter() - t
        grads = model.loss_and_grads(to_float(data[0]), rng=np.random.default_rng(0))[1]
        opt = Adam(lr=1e-3)
        t = time.perf_counter()
        for _ in range(n_steps):  # the same arrays, with no other work evicting them
            opt.step(model.params, grads)
        adam_alone = time.perf_counter() - t
        col = {k: v / n_steps for k, v in spent.items()}
        col["everything else (Python, small arrays)"] = (total - sum(spent.values())) / n_steps
        col["the whole step"] = total / n_steps
        col["the step's matrix products on their own, same shapes"] = mm_alone / n_steps
        col["Adam step on its own, repeated with nothing in between"] = adam_alone / n_steps
        columns[n] = col
    print("| piece | " + " | ".join(f"{n} thread(s): ms | share" for n in columns) + " |")
    print("|---|" + "---:|---:|" * len(columns))
    for name in next(iter(columns.values())):
        cells = [f"{1e3 * c[name]:.2f} | {100 * c[name] / c['the whole step']:.0f}%"
                 for c in columns.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n{n_steps} steps per column (--steps x --repeats), one block, wall clock; the "
          "last two rows are not part of the step's sum.")


def part_scaling(images, args):
    print("\n## Scaling: milliseconds per step\n")
    use_torch = torch is not None and not args.no_torch
    configs = [("batch", b, H) for b in (32, 64, 128, 256, 512, 1024)]  # (kind, batch, hidden)
    configs += [("hidden", 128, h) for h in (100, 200, 400, 800, 1600)]
    n = args.scaling_threads
    results = []
    for kind, batch_size, hidden in configs:
        value = batch_size if kind == "batch" else hidden
        rng = np.random.default_rng(value)
        data = [batches(images, batch_size, args.scaling_steps, rng)
                for _ in range(args.scaling_repeats)]
        steps = {"numpy_vae": numpy_trainer(hidden, n)[0]}
        if use_torch:
            steps["pytorch"] = torch_trainer(hidden)
        with Threads(n):
            times, _ = interleaved(steps, lambda r, data=data: data[r], args.scaling_repeats)
        med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        results.append({"kind": kind, "value": value, "batch": batch_size, "hidden": hidden,
                        **{f"{k}_ms": v for k, v in med.items()}})
    print(f"{n} thread(s); {args.scaling_steps} steps x {args.scaling_repeats} repeats "
          "per cell, medians.\n")
    print("| batch | hidden | numpy_vae ms/step | PyTorch ms/step | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        pt = r.get("pytorch_ms")
        print(f"| {r['batch']} | {r['hidden']} | {r['numpy_vae_ms']:.2f} | "
              + (f"{pt:.2f} | {r['numpy_vae_ms'] / pt:.2f} |" if pt else "- | - |"))
    plot_scaling(results, args.out_dir / "scaling.png", n)
    return results


def plot_scaling(results, path, threads):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind, label in ((axes[0], "batch", "batch size (hidden 400)"),
                            (axes[1], "hidden", "hidden width (batch 128)")):
        rows = [r for r in results if r["kind"] == kind]
        x = np.array([r["value"] for r in rows], dtype=float)
        for key, name, style in (("numpy_vae_ms", "numpy_vae", "o-"),
                                 ("pytorch_ms", "PyTorch (CPU, eager)", "s--")):
            if key in rows[0]:
                ax.plot(x, [r[key] for r in rows], style, label=name)
        y0 = rows[0]["numpy_vae_ms"]
        ax.plot(x, y0 * x / x[0], ":", color="grey", label="proportional")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(x, [str(int(v)) for v in x])
        ys = [r[k] for r in rows for k in ("numpy_vae_ms", "pytorch_ms") if k in r]
        yticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
                  if min(ys) / 2 <= t <= 2 * max(ys)]
        ax.set_yticks(yticks, [str(t) for t in yticks])
        ax.minorticks_off()
        ax.set_xlabel(label)
        ax.set_ylabel("ms per training step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"VAE 784-H-20 training step (loss, gradients, Adam), float32, "
                 f"{threads} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"\nplot: {path}")


def part_memory(args):
    print("\n## Memory: peak RSS of one full MNIST epoch of numpy_vae (fresh process)\n")
    cmd = [sys.executable, __file__, "--rss-child", "--threads", str(min(args.threads))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"- data: {result['data']}, {result['steps']} steps of {result['batch_size']}, "
          f"{result['threads']} thread(s), {result['epoch_s']:.1f} s, "
          f"last loss {result['last_loss']:.1f}")
    print(f"- peak RSS: **{result['peak_rss_mb']:.0f} MB** "
          f"(after import and data load: {result['rss_before_mb']:.0f} MB)")
    return result


def rss_child(args):
    """One epoch of numpy_vae on the training images; print a JSON line."""
    images, source = load_images()
    rss_before = peak_rss_mb()
    step, _ = numpy_trainer()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    limit = threadpool_limits(args.threads[-1]) if threadpool_limits else None
    t = time.perf_counter()
    loss = float("nan")
    for i in range(0, len(order), args.batch_size):
        loss = step(images[np.sort(order[i:i + args.batch_size])])
    epoch_s = time.perf_counter() - t
    if limit is not None:
        limit.unregister()
    print(json.dumps({"data": source, "steps": -(-len(order) // args.batch_size),
                      "threads": args.threads[-1],
                      "batch_size": args.batch_size, "epoch_s": epoch_s, "last_loss": loss,
                      "peak_rss_mb": peak_rss_mb(), "rss_before_mb": rss_before}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="speed,scaling,memory",
                   help="comma-separated: " + ", ".join(PARTS) + " "
                        "(default: speed,scaling,memory)")
    p.add_argument("--steps", type=int, default=50, help="steps per timed block (speed)")
    p.add_argument("--repeats", type=int, default=15, help="interleaved blocks (speed)")
    p.add_argument("--scaling-steps", type=int, default=20)
    p.add_argument("--scaling-repeats", type=int, default=5)
    p.add_argument("--scaling-threads", type=int, default=1,
                   help="threads for the scaling part (default 1: the cost of the work itself)")
    p.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}),
                   help="thread counts to run, for BLAS and PyTorch alike "
                        "(default: 1 and all cores)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-torch", action="store_true", help="time numpy_vae only")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where scaling.png goes")
    p.add_argument("--verbose", action="store_true", help="print every timed block")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        return rss_child(args)
    if not args.no_torch:
        import_torch()
    parts = {s.strip() for s in args.parts.split(",") if s.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")

    kept = keep_freed_memory()  # as numpy_vae's training does; PyTorch shares the setting
    print("## Machine\n")
    print(f"- glibc malloc keeps freed memory (numpy_vae.train.keep_freed_memory): {kept}")
    for k, v in machine().items():
        print(f"- {k}: {v}")
    if torch is None and not args.no_torch:
        print("- PyTorch: not installed, numpy_vae figures only")
    images, source = load_images() if parts - {"memory"} else (None, None)
    if source:
        print(f"- data: {source} {images.shape} uint8, converted per batch")
    t0 = time.perf_counter()
    if "speed" in parts:
        part_speed(images, args)
    if "scaling" in parts:
        part_scaling(images, args)
    if "memory" in parts:
        part_memory(args)
    if "breakdown" in parts:
        part_breakdown(images, args)
    if "adam" in parts:
        part_adam(images, args)
    print(f"\nPeak RSS of this process (with PyTorch loaded, if it is): {peak_rss_mb():.0f} MB; "
          f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}; "
          f"took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
