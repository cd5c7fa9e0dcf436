"""Where numpy_vae's training step spends its time, by Python's standard profiler.

Runs ``--steps`` training steps of the benchmark's model (784-400-20, ReLU,
Bernoulli decoder, Adam lr 1e-3, batch 128, float32, grey-level MNIST: the
step of ``bench_train_step.py``, public API only) under ``cProfile`` and
prints, with ``pstats``, the top functions

- by cumulative time: a call with everything it calls (``loss_and_grads``,
  each layer's forward and backward, ``Adam.step``), and
- by total time: a function's own time, without the functions it calls.

NumPy's ufuncs and operators (``np.exp``, ``a @ b``) are not functions the
profiler sees: their time counts as the own time of the Python function that
calls them. Profiling adds a little to every Python call, so time steps with
``bench_train_step.py``, not here.

Usage: NUMPY_VAE_DATA=/path/to/data python benchmarks/profile_step.py --steps 200 --threads 1
"""

import argparse
import cProfile
import io
import pstats

import numpy as np
from bench_train_step import batches, load_images, machine, numpy_trainer, threadpool_limits

from numpy_vae.runfolder import keep_freed_memory


def profile_steps(step, data):
    """Run ``step`` on every batch of ``data`` under cProfile; return the pstats.Stats."""
    profiler = cProfile.Profile()
    profiler.enable()
    for batch in data:
        step(batch)
    profiler.disable()
    return pstats.Stats(profiler, stream=io.StringIO()).strip_dirs()


def top(stats, key, n):
    """The ``n`` top rows of ``stats`` sorted by ``key``, as pstats prints them."""
    stats.stream = io.StringIO()
    stats.sort_stats(key).print_stats(n)
    text = stats.stream.getvalue()
    return text[text.index("   ncalls"):].rstrip()  # from the table's header on


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200, help="profiled steps")
    p.add_argument("--top", type=int, default=15, help="functions in each list")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)

    kept = keep_freed_memory()  # as `numpy-vae train` does
    print("## Machine\n")
    for k, v in machine().items():
        print(f"- {k}: {v}")
    print(f"- glibc malloc keeps freed memory (as training does): {kept}")
    images, source = load_images()
    data = batches(images, args.batch_size, args.steps + 5, np.random.default_rng(0))
    step, _ = numpy_trainer()
    limit = threadpool_limits(args.threads) if threadpool_limits else None
    for batch in data[:5]:  # warm-up: first calls allocate, BLAS starts its threads
        step(batch)
    stats = profile_steps(step, data[5:])
    if limit is not None:
        limit.unregister()
    per_step = 1e3 * stats.total_tt / args.steps
    print(f"\n{args.steps} steps of {args.batch_size} ({source}), {args.threads} BLAS "
          f"thread(s): {per_step:.2f} ms per step under the profiler")
    print(f"\n## Top {args.top} functions by cumulative time (with what they call)\n")
    print(top(stats, "cumulative", args.top))
    print(f"\n## Top {args.top} functions by total time (their own)\n")
    print(top(stats, "tottime", args.top))


if __name__ == "__main__":
    main()
