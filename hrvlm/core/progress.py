"""Progress of long loops (pretraining, training, evaluation): a bar on a terminal, lines in a log.

A tqdm bar redraws itself with carriage returns; written to a file or a CI console (stderr not a
terminal) every redraw is kept, and a cold book build's log held thousands of such frames.  So a bar
is drawn only where stderr is a terminal; elsewhere progress is one plain line at most every
:data:`LINE_SECONDS` (none for a loop shorter than that), and a closing line if any was printed.

A chapter's kernel has no terminal of its own, whatever the builder's: ``hrvlm book`` tells it through
``$HRVLM_PROGRESS`` (:data:`MODE_ENV`: ``bar``, ``lines`` or ``none``), set from its own stderr
(:func:`mode` of the builder), and its kernels' stderr goes to the builder's.
"""
from __future__ import annotations

import os
import sys
import time

MODE_ENV = "HRVLM_PROGRESS"
MODES = ("bar", "lines", "none")
LINE_SECONDS = 30.0


def mode() -> str:
    """``$HRVLM_PROGRESS`` if it names a mode, else ``bar`` when stderr is a terminal and ``lines`` otherwise."""
    chosen = os.environ.get(MODE_ENV, "")
    if chosen in MODES:
        return chosen
    return "bar" if sys.stderr.isatty() else "lines"


class Lines:
    """The part of tqdm's interface the loops use (iteration, ``update``, ``set_postfix``, ``close``),
    printing ``desc: 40/100 [12 s, 3.3it/s] loss=0.41`` at most every ``every`` seconds."""

    def __init__(self, iterable=None, total=None, desc: str = "", initial: int = 0, every: float | None = None,
                 stream=None):
        self.iterable, self.total, self.desc, self.n = iterable, total, desc, initial
        self.every = LINE_SECONDS if every is None else every
        self.stream = stream if stream is not None else sys.stderr
        self.start = self.last = time.perf_counter()
        self.initial, self.postfix, self.printed = initial, "", False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self.last >= self.every:
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.printed:
            self._line()

    def _line(self) -> None:
        now = time.perf_counter()
        elapsed = now - self.start
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        total = f"/{self.total}" if self.total is not None else ""
        print(f"{self.desc}: {self.n}{total} [{elapsed:.0f} s, {rate:.2f}it/s] {self.postfix}".rstrip(),
              file=self.stream, flush=True)
        self.last, self.printed = now, True


def progress(iterable=None, *, total: int | None = None, desc: str = "", initial: int = 0, enabled: bool = True,
             mininterval: float = 1.0, leave: bool = True):
    """A progress reporter for ``iterable`` (or for manual ``update`` calls): a tqdm bar in ``bar`` mode,
    :class:`Lines` in ``lines`` mode, a silent one when not ``enabled`` or in ``none`` mode (:func:`mode`)."""
    from tqdm import tqdm

    chosen = mode() if enabled else "none"
    if chosen == "lines":
        return Lines(iterable, total=total, desc=desc, initial=initial)
    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=chosen == "none", mininterval=mininterval,
                leave=leave)


__all__ = ["LINE_SECONDS", "Lines", "MODE_ENV", "MODES", "mode", "progress"]
