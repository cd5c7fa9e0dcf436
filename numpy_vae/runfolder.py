"""The run folder: one process owns it, signals stop at safe points, its memory habits.

A run lives in one folder (see ``train``). While a process trains there it
holds an exclusive lock on the folder; it deletes only the temporary files its
own writes leave; and SIGINT, SIGTERM and SIGHUP become a request that the
training loop honours between steps, so a checkpoint is never cut in half.
"""

import contextlib
import ctypes
import fcntl
import os
import signal
from pathlib import Path

from .checkpoint import temporary_name_pattern
from .errors import NumpyVAEError

M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3  # glibc's mallopt parameter numbers (malloc.h)


def keep_freed_memory(pad_bytes=64 << 20, mmap_threshold=32 << 20):
    """Ask glibc's malloc to keep freed memory for reuse. Returns True if it took both settings.

    A training step allocates and frees a few MB of temporary arrays. By
    default glibc may give large blocks and the top of its heap back to the
    system when they are freed, and the next step then faults the pages in
    again. How often depends on the process's heap layout: a one-epoch fit
    made 2-3 ``brk`` calls per step without this setting and almost none with
    it, and a script that timed the step part by part spent a third of its
    time on such page faults (on the 2-core VM of the README's Speed section).
    Here blocks below ``mmap_threshold`` come from the heap, and ``pad_bytes``
    of freed heap are kept. This changes how the process reuses memory, never
    a number; it is a no-op (False) where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return (mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
            and mallopt(M_TOP_PAD, int(pad_bytes)) == 1)


class RunFolderError(NumpyVAEError, FileExistsError):
    """The run folder cannot be used for what was asked (another run, another process, ...)."""


class TrainingInterrupted(Exception):
    """Training stopped at a safe point on SIGINT, SIGTERM or SIGHUP; ``message`` says what
    was saved. ``signum`` is the signal."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_folder_lock(out):
    """Hold an exclusive lock on the run folder ``out`` (created if needed) while inside.

    A second process asking for the same folder is refused at once, naming the
    holder. The lock is ``flock`` on ``out/.lock``: the kernel releases it when
    its process exits, however it exits, so a lock left by a dead process is
    simply taken over.
    """
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderError(f"{out} is in use by another training process (pid {holder}); "
                                 f"wait for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


RUN_FILES = ("checkpoint.npz", "checkpoint.json", "history.csv")


def remove_own_temporaries(out):
    """Delete temporary files a killed run left in ``out``: only the names ``atomic_write``
    gives this module's own files and the pictures, never anything else.

    Call it only while holding the folder's lock: then no live process writes there.
    """
    for name in (*RUN_FILES, "*.png"):
        for stale in out.glob(temporary_name_pattern(name)):
            stale.unlink()


def check_new_run_folder(out):
    """Refuse a folder for a fresh run if it holds a run, other files, or is the current
    directory (whose files a run would mix with the user's)."""
    if out.exists() and out.resolve() == Path.cwd().resolve():
        raise RunFolderError("the current directory cannot be a run folder: give --out a new "
                             "or empty folder")
    if (out / "checkpoint.npz").exists():
        raise RunFolderError(f"{out} already holds a run; pass resume=True (--resume) to "
                             f"continue it, or choose another output folder")
    if out.is_file():
        raise RunFolderError(f"{out} is a file, not a folder")
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) if out.exists() else []
    others = [n for n in others if not (n.startswith(".") and n.endswith(".tmp"))]
    if others:
        raise RunFolderError(f"{out} is not empty and holds no run ({', '.join(others[:3])}"
                             f"{', ...' if len(others) > 3 else ''}); choose a new or empty folder")


@contextlib.contextmanager
def stop_at_safe_points():
    """Turn SIGINT, SIGTERM and SIGHUP into a request checked between steps.

    Yields a dict whose "signum" is set when a signal came; the training loop
    stops at its next safe point (after a step, never inside a checkpoint
    write). A second signal stops at once. Outside the main thread (where
    handlers cannot be set) signals keep their usual effect.
    """
    request = {"signum": None}

    def handler(signum, frame):
        if request["signum"] is not None:
            raise KeyboardInterrupt
        request["signum"] = signum

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    try:
        old = {s: signal.signal(s, handler) for s in signals}
    except ValueError:  # not the main thread
        yield request
        return
    try:
        yield request
    finally:
        for s, h in old.items():
            signal.signal(s, h)
