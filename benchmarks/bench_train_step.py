"""Time numpy_vae's training step against the same model in PyTorch (CPU, eager).

The model is the one of PyTorch's VAE example (examples/vae/main.py):
784-400-20 with ReLU, a Bernoulli decoder on grey-level MNIST, Adam with
lr 1e-3, batch 128, float32. One training step is: convert a uint8 batch to
float32 in [0, 1], ``model.loss_and_grads``, ``Adam.step``: the library's
public API and nothing else (no private name is read or patched).

Reduction: numpy_vae's loss is the batch *mean* of -ELBO. The example sums
BCE + KL over the batch; here the PyTorch loss is that sum divided by the
batch size, i.e. the same mean, so both runs take the same Adam steps (Adam
is nearly scale-invariant, but its eps is not). The decoder is the example's:
sigmoid, then ``F.binary_cross_entropy`` (numpy_vae works on the logits).

Steps are timed interleaved (A B B A A B ...) in one process, on the same
batches and with the same number of threads (``torch.set_num_threads``,
threadpoolctl for NumPy's BLAS), and compared as ratios of medians, since the
machine may be shared and absolute times drift. Each library initialises its
weights its own way. Every run first prints the machine: CPU, cores, load
average, Python, NumPy, its BLAS and kernel, PyTorch. On a machine where other
jobs hold the cores, multi-threaded timings of both libraries are dominated by
worker threads waiting for each other; trust the 1-thread figures there.

Parts (``--parts``, comma-separated; default speed,scaling,memory):
  speed    seconds per epoch (469 steps of 128) of numpy_vae and PyTorch, their
           ratio, and the share of numpy_vae's step spent in matrix products (the
           step's products, same shapes, timed on their own between the steps).
           With ``--baseline PATH`` also an older numpy_vae source tree (a git
           worktree, say), imported as ``numpy_vae_baseline`` and timed in the same
           interleaving: "current / baseline". When OPENBLAS_CORETYPE is set, the
           part runs again in a child process without OPENBLAS_CORETYPE and
           OPENBLAS_L2_SIZE, so OpenBLAS picks its kernel itself; both results are
           printed with their kernels.
  scaling  step time against batch size (hidden 400) and hidden width (batch
           128): a table and a log-log plot, benchmarks/scaling.png
  memory   peak resident memory of one full MNIST epoch of numpy_vae, in a
           fresh process without PyTorch
  malloc   does asking glibc's malloc to keep freed memory (mallopt: mmap
           threshold 32 MiB, top pad 64 MiB) buy at least 5% of an epoch? Seconds
           per epoch of numpy_vae in fresh processes with and without it,
           alternated over ``--malloc-repeats``. Only those children change
           malloc's settings; every other figure runs with glibc's defaults.
  iwae     milliseconds per training step with the importance-weighted bound, k = 5
           (``model.iwae_loss_and_grads(x, 5, rng=rng)``, ``Adam.step``), against a
           k = 1 step of the ELBO (``model.loss_and_grads(x, rng=rng)``, ``Adam.step``)
           of the same model: same architecture, same initial weights, same float32
           batches, interleaved like the speed part, for each count of ``--threads``;
           "IWAE / ELBO" is the ratio of the medians over ``--repeats``. Two models:
           the IWAE paper's (Burda et al. 2015: 784-200-200-50 tanh, Bernoulli, batch
           100, dynamically binarized MNIST, Adam eps 1e-4) and the speed part's
           (784-400-20 ReLU, batch 128, grey levels). Each repeat's batches are
           converted (and binarized) before its blocks, outside the timing, so the
           two steps see the same inputs. Not in the default parts.

Where the time of one step goes: ``benchmarks/profile_step.py`` (cProfile).

Usage (the full measurement, on an idle machine):
  NUMPY_VAE_DATA=/path/to/data python benchmarks/bench_train_step.py \\
      --parts speed,scaling,memory,malloc,iwae --threads 2 1 --repeats 15 \\
      --baseline /path/to/old/tree
Quick look: python benchmarks/bench_train_step.py --parts speed --threads 1 --steps 20 --repeats 3

PyTorch is optional (``pip install torch``); without it only numpy_vae's
figures are printed.
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import numpy_vae
from numpy_vae.runfolder import keep_freed_memory

torch = None  # imported by import_torch(), never in the child processes that measure memory

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:
    threadpool_info = threadpool_limits = None

HERE = Path(__file__).resolve().parent
PARTS = ("speed", "scaling", "memory", "malloc", "iwae")
STEPS_PER_EPOCH = 469  # ceil(60000 / 128)
D, H, Z = 784, 400, 20
KERNEL_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # the rerun's child goes without both
IWAE_K = 5
# The iwae part's models: (label, hidden_dims, latent_dim, activation, batch size,
# dynamic binarization, Adam's eps). The first is the iwae-paper-k5 preset's model.
IWAE_MODELS = (
    ("784-200-200-50 tanh, B=100, binarized", (200, 200), 50, "tanh", 100, True, 1e-4),
    ("784-400-20 ReLU, B=128, grey", (H,), Z, "relu", 128, False, 1e-8),
)


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


# ----------------------------------------------------------------------------- the steps


def numpy_trainer(hidden=H, seed=0, lib=numpy_vae):
    """A model and Adam of ``lib`` (a numpy_vae package); returns ``step(uint8 batch) -> loss``
    and the model."""
    model = lib.VAE(D, (hidden,), Z, likelihood="bernoulli", activation="relu",
                    dtype=np.float32, rng=np.random.default_rng(seed))
    opt = lib.Adam(lr=1e-3)
    rng = np.random.default_rng(seed + 1)

    def step(batch):
        # The current library returns (loss, grads, terms); older trees (loss, grads).
        loss, grads, *_ = model.loss_and_grads(to_float(batch), rng=rng)
        opt.step(model.params, grads)
        return loss

    return step, model


def import_baseline(path, name="numpy_vae_baseline"):
    """Import the numpy_vae package of the source tree ``path`` as the module ``name``."""
    path = Path(path).resolve()
    package = path / "numpy_vae" if (path / "numpy_vae" / "__init__.py").exists() else path
    if not (package / "__init__.py").exists():
        raise SystemExit(f"--baseline {path}: neither numpy_vae/__init__.py nor __init__.py there")
    spec = importlib.util.spec_from_file_location(name, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: its relative imports look it up there
    spec.loader.exec_module(module)
    return module


def describe_tree(package):
    """'0.1.0, /path (git abc1234, uncommitted changes)' for an imported numpy_vae package."""
    root = Path(package.__file__).resolve().parents[1]
    text = f"{getattr(package, '__version__', '?')}, {root}"
    try:
        git = ["git", "-C", str(root)]
        commit = subprocess.run(git + ["log", "-1", "--format=%h %s"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "numpy_vae"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return text
    if commit:
        text += f" (git {commit[:60]}{', uncommitted changes in numpy_vae/' if dirty else ''})"
    return text


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
    """PyTorch's examples/vae model with Adam; returns ``step(uint8 batch) -> loss``."""
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

    For every weight matrix W (I, O) of ``model.params``: forward ``x @ W``,
    backward ``x.T @ dout`` and ``dout @ W.T``, except the last for the layer
    whose input is the data (I = 784; no hidden width here is 784).
    """
    rng = np.random.default_rng(seed)
    ops = []
    for W in (p for p in model.params.values() if p.ndim == 2):
        I, O = W.shape
        x = rng.random((batch_size, I), dtype=np.float32)  # (B, I)
        dout = rng.standard_normal((batch_size, O), dtype=np.float32)  # (B, O)
        ops += [(x, W), (x.T, dout)] + ([(dout, W.T)] if I != D else [])

    def run():
        for a, b in ops:
            np.matmul(a, b)

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


def ratio_summary(a, b):
    """Ratio of the medians of ``a`` and ``b``, and (min, median, max) of the paired ratios."""
    paired = np.array(a) / np.array(b)
    return (float(np.median(a) / np.median(b)),
            (float(paired.min()), float(np.median(paired)), float(paired.max())))


# ----------------------------------------------------------------------------- machine


def kernel_env():
    """'OPENBLAS_CORETYPE=Haswell, OPENBLAS_L2_SIZE=512', or that neither is set."""
    env = ", ".join(f"{k}={os.environ[k]}" for k in KERNEL_ENV if k in os.environ)
    return env or "OPENBLAS_CORETYPE not set"


def blas_kernel(short=False):
    """Which BLAS NumPy calls and which kernel it runs (threadpoolctl), and the environment.

    ``short``: the kernel (OpenBLAS's architecture) and the environment only.
    """
    if threadpool_info is None:
        return f"unknown (pip install threadpoolctl); {kernel_env()}"
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if short:
        kernels = ", ".join(str(i.get("architecture", i["internal_api"])) for i in infos)
        return f"{kernels or '?'} ({kernel_env()})"
    text = ", ".join(f"{i['internal_api']} {i.get('version')} (architecture "
                     f"{i.get('architecture', '-')}, {i['num_threads']} threads, "
                     f"{Path(i['filepath']).name})" for i in infos)
    return f"{text or 'none found'}; {kernel_env()}"


def cpu_model():
    """'AMD EPYC (family 26, model 2, 2596.0 MHz)' from /proc/cpuinfo, or what platform knows."""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        return (f"{fields['model name']} (family {fields.get('cpu family', '?')}, "
                f"model {fields.get('model', '?')}, {fields.get('cpu MHz', '?')} MHz)")
    except (OSError, KeyError):
        return platform.processor() or platform.machine()


def machine():
    """CPU model, cores, load, library versions, BLAS kernel."""
    info = {
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "load average (1, 5, 15 min) at start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(), "numpy": np.__version__,
        "numpy_vae": describe_tree(numpy_vae), "BLAS kernel": blas_kernel(),
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


# ----------------------------------------------------------------------------- speed


def speed_rows(images, args, baseline):
    """Time the steps interleaved for each thread count; one dict of results per count."""
    rows = []
    for n in args.threads:
        rng = np.random.default_rng(n)
        data = [batches(images, args.batch_size, args.steps, rng) for _ in range(args.repeats)]
        np_step, model = numpy_trainer()
        steps = {"numpy_vae": np_step}
        if baseline is not None:
            steps["baseline"] = numpy_trainer(lib=baseline)[0]
        if torch is not None and not args.no_torch:
            steps["pytorch"] = torch_trainer()
        mm = matmul_timer(model, args.batch_size)
        steps["numpy_vae matmuls only"] = lambda batch, mm=mm: mm()
        with Threads(n):
            times, cpu = interleaved(steps, lambda r, data=data: data[r], args.repeats)
        med = {k: float(np.median(v)) for k, v in times.items()}
        row = {"threads": n, "numpy_vae_epoch_s": med["numpy_vae"] * STEPS_PER_EPOCH,
               "matmul_share": med["numpy_vae matmuls only"] / med["numpy_vae"]}
        for other in ("pytorch", "baseline"):
            if other in med:
                row[f"{other}_epoch_s"] = med[other] * STEPS_PER_EPOCH
                row[f"{other}_ratio"], row[f"{other}_spread"] = ratio_summary(
                    times["numpy_vae"], times[other])
                row[f"{other}_cpu_ratio"] = float(np.median(cpu["numpy_vae"])
                                                  / np.median(cpu[other]))
        rows.append(row)
        if args.verbose:
            for k, v in times.items():
                print(f"  {n} thr {k:24s} ms/step: " + " ".join(f"{1e3 * t:.2f}" for t in v))
                print(f"  {n} thr {k:24s} CPU ms:  " + " ".join(f"{1e3 * t:.2f}" for t in cpu[k]))
    return rows


def print_speed(rows, args):
    print("| threads | numpy_vae s/epoch | PyTorch s/epoch | numpy_vae / PyTorch "
          "| per repeat (min, median, max) | same, CPU time | matmul share of numpy_vae |")
    print("|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        has = "pytorch_ratio" in r
        pt = f"{r['pytorch_epoch_s']:.2f}" if has else "-"
        ratio = f"**{r['pytorch_ratio']:.2f}**" if has else "-"
        spread = "({:.2f}, {:.2f}, {:.2f})".format(*r["pytorch_spread"]) if has else "-"
        cpu_ratio = f"{r['pytorch_cpu_ratio']:.2f}" if has else "-"
        print(f"| {r['threads']} | {r['numpy_vae_epoch_s']:.2f} | {pt} | {ratio} | {spread} "
              f"| {cpu_ratio} | {100 * r['matmul_share']:.0f}% |")
    print(f"\n{args.steps} steps x {args.repeats} repeats per cell; medians over repeats; "
          "epoch = 469 x median wall-clock seconds per step. CPU time counts every thread "
          "of the process, spin-waiting included.")


def print_baseline(rows, baseline):
    print(f"\n## Current against baseline, same interleaving\n\n"
          f"- current: {describe_tree(numpy_vae)}\n- baseline: {describe_tree(baseline)}\n")
    print("| threads | current s/epoch | baseline s/epoch | current / baseline "
          "| per repeat (min, median, max) | same, CPU time |")
    print("|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['threads']} | {r['numpy_vae_epoch_s']:.2f} | {r['baseline_epoch_s']:.2f} "
              f"| **{r['baseline_ratio']:.2f}** | "
              + "({:.2f}, {:.2f}, {:.2f})".format(*r["baseline_spread"])
              + f" | {r['baseline_cpu_ratio']:.2f} |")


def part_speed(images, args, baseline, heading=True):
    if heading:
        print("\n## Speed: seconds per epoch (469 steps of 128), interleaved\n")
    print(f"BLAS kernel: {blas_kernel()}\n")
    rows = speed_rows(images, args, baseline)
    print_speed(rows, args)
    if baseline is not None:
        print_baseline(rows, baseline)
    return rows


def run_child(cmd, env=None):
    """Run ``cmd``; return its standard output, or stop with its error output."""
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child process failed: {' '.join(cmd)}\n{out.stderr}")
    return out.stdout


def speed_child_command(args):
    """This script's speed part with the same settings, to run in a child process."""
    cmd = [sys.executable, __file__, "--parts", "speed", "--kernel-child",
           "--steps", str(args.steps), "--repeats", str(args.repeats),
           "--batch-size", str(args.batch_size), "--threads", *map(str, args.threads)]
    cmd += ["--no-torch"] if args.no_torch else []
    cmd += ["--verbose"] if args.verbose else []
    cmd += ["--baseline", str(args.baseline)] if args.baseline else []
    return cmd


def part_speed_default_kernel(rows, args):
    """Rerun the speed part in a child without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE; compare."""
    print("\n## Speed again, in a child process without "
          + " and ".join(KERNEL_ENV) + " (OpenBLAS chooses its kernel itself)\n")
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV}
    *lines, last = run_child(speed_child_command(args), env).rstrip().splitlines()
    print("\n".join(lines).strip())
    child = json.loads(last)
    print("\n## BLAS kernels compared\n")
    print("| BLAS kernel | threads | numpy_vae s/epoch | PyTorch s/epoch | numpy_vae / PyTorch |")
    print("|---|---:|---:|---:|---:|")
    for kernel, rs in ((blas_kernel(short=True), rows), (child["kernel"], child["rows"])):
        for r in rs:
            has = "pytorch_ratio" in r
            print(f"| {kernel} | {r['threads']} | {r['numpy_vae_epoch_s']:.2f} | "
                  + (f"{r['pytorch_epoch_s']:.2f} | {r['pytorch_ratio']:.2f} |" if has
                     else "- | - |"))
    print("\nThe two runs are separate processes, one after the other: compare their "
          "numpy_vae / PyTorch ratios rather than their seconds.")


# ----------------------------------------------------------------------------- iwae


def iwae_trainers(hidden, latent, activation, adam_eps, seed=0):
    """Two copies of one model (same weights), each with its Adam; returns ``{name: step}``.

    ``step(x)`` takes a float32 batch (B, 784): "ELBO" is ``loss_and_grads`` (k = 1,
    closed-form KL), "IWAE" ``iwae_loss_and_grads`` with k = IWAE_K; then ``Adam.step``.
    """
    def make(objective):
        model = numpy_vae.VAE(D, hidden, latent, likelihood="bernoulli", activation=activation,
                              dtype=np.float32, rng=np.random.default_rng(seed))
        opt = numpy_vae.Adam(lr=1e-3, eps=adam_eps)
        rng = np.random.default_rng(seed + 1)

        def step(x):
            if objective == "iwae":
                loss, grads, terms = model.iwae_loss_and_grads(x, IWAE_K, rng=rng)
            else:
                loss, grads, terms = model.loss_and_grads(x, rng=rng)
            opt.step(model.params, grads)
            return loss

        return step

    return {"ELBO": make("elbo"), "IWAE": make("iwae")}


def iwae_rows(images, args):
    """Time the ELBO and IWAE steps interleaved for each model and thread count."""
    from numpy_vae.data import binarize_dynamic

    rows = []
    for m, (label, hidden, latent, activation, batch_size, binarize, adam_eps) in enumerate(
            IWAE_MODELS):
        for n in args.threads:
            rng = np.random.default_rng(100 * m + n)
            data = [batches(images, batch_size, args.steps, rng) for _ in range(args.repeats)]
            prepared = {}

            def inputs(r, data=data, prepared=prepared, binarize=binarize):
                """Repeat r's float32 batches, made once (outside the timing) for both steps."""
                r %= len(data)  # the warm-up asks for -1: the last repeat's batches
                if r not in prepared:
                    prepared.clear()  # one repeat's batches in memory at a time
                    bin_rng = np.random.default_rng(r)
                    prepared[r] = [binarize_dynamic(to_float(b), bin_rng) if binarize
                                   else to_float(b) for b in data[r]]
                return prepared[r]

            steps = iwae_trainers(hidden, latent, activation, adam_eps)
            with Threads(n):
                times, _ = interleaved(steps, inputs, args.repeats)
            ratio, spread = ratio_summary(times["IWAE"], times["ELBO"])
            rows.append({"model": label, "threads": n, "batch_size": batch_size,
                         "elbo_ms": 1e3 * float(np.median(times["ELBO"])),
                         "iwae_ms": 1e3 * float(np.median(times["IWAE"])),
                         "ratio": ratio, "spread": spread})
            if args.verbose:
                for k, v in times.items():
                    print(f"  {label}, {n} thr {k:4s} ms/step: "
                          + " ".join(f"{1e3 * t:.2f}" for t in v))
    return rows


def part_iwae(images, args):
    print(f"\n## IWAE k={IWAE_K} against ELBO: milliseconds per training step, interleaved\n")
    print(f"BLAS kernel: {blas_kernel()}\n")
    rows = iwae_rows(images, args)
    print(f"| model | threads | ELBO step ms | IWAE k={IWAE_K} step ms | ratio |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['threads']} | {r['elbo_ms']:.2f} | {r['iwae_ms']:.2f} "
              f"| **{r['ratio']:.2f}** |")
    print(f"\n{args.steps} steps x {args.repeats} repeats per cell; medians over repeats; "
          f"ratio = IWAE / ELBO, the ratio of the medians (per repeat, min to max: "
          + "; ".join(f"{r['model'].split()[0]} {r['threads']} thr "
                      f"{r['spread'][0]:.2f}-{r['spread'][2]:.2f}" for r in rows) + ").")
    print(f"The IWAE step runs the encoder once, on the B rows of the batch, and only the "
          f"decoder (with the log-weights) on B*k = {IWAE_K}B rows, while Adam's update costs "
          f"the same in both steps, so with k = {IWAE_K} the ratio can be well under {IWAE_K}.")
    return rows


# ----------------------------------------------------------------------------- scaling


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
        steps = {"numpy_vae": numpy_trainer(hidden)[0]}
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


# ----------------------------------------------------------------------------- memory, malloc


def run_epoch_child(args, threads, steps=None, mallopt=False):
    """Run this script's epoch in a fresh process (no PyTorch); return its JSON result."""
    cmd = [sys.executable, __file__, "--epoch-child", "--threads", str(threads),
           "--batch-size", str(args.batch_size)]
    cmd += ["--epoch-steps", str(steps)] if steps else []
    cmd += ["--mallopt"] if mallopt else []
    return json.loads(run_child(cmd).strip().splitlines()[-1])


def epoch_child(args):
    """One shuffled MNIST epoch of numpy_vae (or its first --epoch-steps); print a JSON line."""
    kept = keep_freed_memory() if args.mallopt else False  # before any training allocation
    images, source = load_images()
    rss_before = peak_rss_mb()
    step, _ = numpy_trainer()
    order = np.random.default_rng(0).permutation(len(images))
    starts = range(0, len(order), args.batch_size)[:args.epoch_steps or None]
    limit = threadpool_limits(args.threads[0]) if threadpool_limits else None
    for i in starts[:3]:  # warm-up, not timed
        step(images[np.sort(order[i:i + args.batch_size])])
    t = time.perf_counter()
    loss = float("nan")
    for i in starts:
        loss = step(images[np.sort(order[i:i + args.batch_size])])
    seconds = time.perf_counter() - t
    if limit is not None:
        limit.unregister()
    print(json.dumps({"data": source, "steps": len(starts), "threads": args.threads[0],
                      "batch_size": args.batch_size, "seconds": seconds,
                      "epoch_s": seconds / len(starts) * STEPS_PER_EPOCH, "last_loss": loss,
                      "mallopt": kept, "peak_rss_mb": peak_rss_mb(),
                      "rss_before_mb": rss_before}))


def part_memory(args):
    print("\n## Memory: peak RSS of one full MNIST epoch of numpy_vae (fresh process)\n")
    result = run_epoch_child(args, min(args.threads))
    print(f"- data: {result['data']}, {result['steps']} steps of {result['batch_size']}, "
          f"{result['threads']} thread(s), {result['seconds']:.1f} s, "
          f"last loss {result['last_loss']:.1f}")
    print(f"- peak RSS: **{result['peak_rss_mb']:.0f} MB** "
          f"(after import and data load: {result['rss_before_mb']:.0f} MB)")
    return result


def part_malloc(args):
    print("\n## glibc malloc: does keeping freed memory buy 5% of an epoch?\n")
    print(f"Fresh processes alternated, {args.malloc_repeats} of each per thread count, "
          f"{args.malloc_steps} steps each; 'with' first calls mallopt(M_MMAP_THRESHOLD, "
          "32 MiB) and mallopt(M_TOP_PAD, 64 MiB).\n")
    print("| threads | with mallopt s/epoch | without s/epoch | with / without "
          "| per repeat (min, median, max) |")
    print("|---:|---:|---:|---:|---|")
    ratios, took = {}, True
    for n in args.threads:
        times = {True: [], False: []}
        for r in range(args.malloc_repeats):
            for setting in ((True, False) if r % 2 == 0 else (False, True)):
                result = run_epoch_child(args, n, args.malloc_steps, mallopt=setting)
                took &= result["mallopt"] or not setting
                times[setting].append(result["epoch_s"])
        ratios[n], spread = ratio_summary(times[True], times[False])
        print(f"| {n} | {np.median(times[True]):.2f} | {np.median(times[False]):.2f} "
              f"| **{ratios[n]:.2f}** | " + "({:.2f}, {:.2f}, {:.2f})".format(*spread) + " |")
    print("\nmalloc ratio (with / without, medians): " + "; ".join(
        f"{n} thread(s) {r:.2f}, buys at least 5% of an epoch: **{'yes' if r <= 0.95 else 'no'}**"
        for n, r in ratios.items())
        + ("" if took else " (mallopt refused: not glibc?)")
        + f". Load average (1 min) now {os.getloadavg()[0]:.2f}.")


# ----------------------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="speed,scaling,memory",
                   help="comma-separated: " + ", ".join(PARTS) + " "
                        "(default: speed,scaling,memory)")
    p.add_argument("--steps", type=int, default=50, help="steps per timed block (speed, iwae)")
    p.add_argument("--repeats", type=int, default=15, help="interleaved blocks (speed, iwae)")
    p.add_argument("--baseline", type=Path, help="an older numpy_vae source tree to time too")
    p.add_argument("--scaling-steps", type=int, default=20)
    p.add_argument("--scaling-repeats", type=int, default=5)
    p.add_argument("--scaling-threads", type=int, default=1,
                   help="threads for the scaling part (default 1: the cost of the work itself)")
    p.add_argument("--malloc-steps", type=int, default=STEPS_PER_EPOCH,
                   help="steps per child process (malloc; default a full epoch)")
    p.add_argument("--malloc-repeats", type=int, default=5,
                   help="child processes of each kind per thread count (malloc)")
    p.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}),
                   help="thread counts to run, for BLAS and PyTorch alike "
                        "(default: 1 and all cores)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="speed, memory, malloc (the iwae part's batch sizes are its models')")
    p.add_argument("--no-torch", action="store_true", help="time numpy_vae only")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where scaling.png goes")
    p.add_argument("--verbose", action="store_true", help="print every timed block")
    for hidden in ("--epoch-child", "--kernel-child", "--mallopt"):  # set for child processes
        p.add_argument(hidden, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--epoch-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.parts_set = {s.strip() for s in args.parts.split(",") if s.strip()}
    unknown = args.parts_set - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.epoch_child:
        return epoch_child(args)
    if not args.no_torch:
        import_torch()
    baseline = import_baseline(args.baseline) if args.baseline else None
    # As `numpy-vae train` does; per process, so PyTorch and the baseline run with it too.
    kept = keep_freed_memory()
    parts = args.parts_set
    images, source = load_images() if parts & {"speed", "scaling", "iwae"} else (None, None)
    if args.kernel_child:  # the speed part only, and its rows for the parent
        rows = part_speed(images, args, baseline, heading=False)
        return print(json.dumps({"kernel": blas_kernel(short=True), "rows": rows}))

    print("## Machine\n")
    for k, v in machine().items():
        print(f"- {k}: {v}")
    print(f"- glibc malloc keeps freed memory (numpy_vae.runfolder.keep_freed_memory, as "
          f"training does): {kept}")
    if torch is None and not args.no_torch:
        print("- PyTorch: not installed, numpy_vae figures only")
    if source:
        print(f"- data: {source} {images.shape} uint8, converted per batch")
    t0 = time.perf_counter()
    if "speed" in parts:
        rows = part_speed(images, args, baseline)
        if "OPENBLAS_CORETYPE" in os.environ:
            part_speed_default_kernel(rows, args)
    if "scaling" in parts:
        part_scaling(images, args)
    if "memory" in parts:
        part_memory(args)
    if "malloc" in parts:
        part_malloc(args)
    if "iwae" in parts:
        part_iwae(images, args)
    print(f"\nPeak RSS of this process (with PyTorch loaded, if it is): {peak_rss_mb():.0f} MB; "
          f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}; "
          f"took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
