"""A chapter's independent variants side by side: ``workers`` processes with one torch thread each.

Training runs and evaluations of different variants share nothing but files that are safe to share (a
run folder is locked by its writer, a records store appends under a lock), and every run and record is a
function of its configuration, so a variant's result is the same whichever process computes it.  One
torch thread per process is also what the sequential path uses (:func:`map_in_workers` with one worker),
so a parallel build and a sequential one give identical records, not merely close ones.

The count is the profile's ``book.workers`` (2 for the CPU profiles: the machine this book is built on
has two cores; 1 under ``full``, whose one GPU is shared), or ``$HRVLM_WORKERS``.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import gc
import multiprocessing
import os
from typing import Callable, Iterable, TypeVar

from hrvlm.profiles import get_profile

WORKERS_ENV = "HRVLM_WORKERS"
T = TypeVar("T")
R = TypeVar("R")


def worker_count(profile: str, workers: int | None = None) -> int:
    """``workers`` if given, else ``$HRVLM_WORKERS``, else the profile's ``book.workers`` (default 1)."""
    if workers is None:
        text = os.environ.get(WORKERS_ENV, "").strip()
        if text:
            if not text.isdigit() or int(text) < 1:
                raise ValueError(f"${WORKERS_ENV}={text!r}: give a whole number of processes >= 1, e.g. 2")
            workers = int(text)
        else:
            workers = (get_profile(profile).book or {}).get("workers", 1)
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


def _one_thread() -> None:
    import signal

    import torch

    torch.set_num_threads(1)
    # Jupyter interrupts a kernel's whole process group when it shuts the kernel down: the parent decides
    # (an interrupted call stops its processes, :func:`map_in_workers`), not each process
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _threads(n: int):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def map_in_workers(fn: Callable[[T], R], items: Iterable[T], workers: int,
                   done: Callable[[T], R | None] | None = None) -> list[R]:
    """``[fn(item) for item in items]``, in order, computed by ``workers`` processes (spawned: a forked
    child of a process that already ran torch threads can deadlock) or, for one worker or one item, here;
    one torch thread either way.  ``fn`` and the items must pickle (module-level functions, dataclasses).

    ``done(item)``: ``fn(item)``'s result if it already exists (a finished run, stored records), found
    without computing, else ``None``; with several processes, the items it answers are not sent to one, so a
    rebuild whose work is all cached starts none.  The processes persist for the next call (:func:`_pool`): starting
    two takes seconds, and a chapter maps many times."""
    items = list(items)
    with _threads(1):
        if workers <= 1 or len(items) <= 1:  # fn finds cached work itself: done would only repeat it
            return [fn(item) for item in items]
        results = [None if done is None else done(item) for item in items]
        todo = [i for i, result in enumerate(results) if result is None]
        if len(todo) <= 1:
            for i in todo:
                results[i] = fn(items[i])
            return results
    pool = _pool(workers)
    try:
        for i, result in zip(todo, pool.map(fn, [items[i] for i in todo])):
            results[i] = result
    except BaseException:
        # an error, an interrupt or a dead process: stop the other jobs now (an interrupted run resumes from its
        # checkpoint, a record is one whole line) and start new processes next time
        stop_workers()
        raise
    return results


_POOL: dict = {}  # {"key": what the processes were started with, "pool": the executor}


def _pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """The process's pool of ``workers`` spawned one-thread processes, started on first use and kept until
    exit.  A process reads its environment and working folder once, at its start, so a call made under
    other environment variables (another ``HRVLM_CACHE``) or in another folder starts new processes."""
    key = (workers, os.getcwd(), tuple(sorted(os.environ.items())))
    if _POOL.get("key") != key:
        stop_workers()
        context = multiprocessing.get_context("spawn")
        _POOL.update(key=key, pool=concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                                          initializer=_one_thread))
    return _POOL["pool"]


@atexit.register
def stop_workers() -> None:
    """Stop the pool's processes now, busy or idle (at exit, on another environment, after an error), and
    with them multiprocessing's resource tracker, which the pool started.

    A book chapter ends with this call (its last cell, :mod:`hrvlm.book.build`) because of how a Jupyter
    kernel shuts down: it signals its children with SIGTERM, then SIGKILL, for up to 14 s, and the resource
    tracker ignores SIGTERM; Jupyter meanwhile terminates a kernel that has not exited within 2.5 s.  With
    the tracker alive, a chapter's log ended in asyncio's "Task was destroyed" traceback or the killed
    tracker's "leaked semaphore" warning."""
    pool = _POOL.pop("pool", None)
    _POOL.clear()
    if pool is not None:
        # concurrent.futures has no public way to stop a process before Python 3.14
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        del pool
        gc.collect()  # the pool's semaphores unregister themselves from the tracker as they are freed
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)  # no public way either; 3.8+ has this
    if stop is not None:
        stop()  # the next pool starts it again
