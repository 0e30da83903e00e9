"""Per-epoch progress bar: tqdm when installed, else a small built-in bar with the same look.

    bar = progress(150, "Epoch 4")
    for batch in ...:
        ...
        bar.update()          # cheap: a counter increment, drawing is rate-limited
    bar.close()               # Epoch 4: 100%|##########| 150/150 [00:01<00:00, 123.45it/s]

``progress`` also works as a context manager and can wrap an iterable
(``for b in progress(total=len(loader), desc=..., iterable=loader)``).
"""
import sys
import time

__all__ = ["progress", "SimpleBar", "format_bar"]


def _fmt_time(seconds):
    seconds = int(max(seconds, 0))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return "{:d}:{:02d}:{:02d}".format(h, m, s) if h else "{:02d}:{:02d}".format(m, s)


def format_bar(n, total, elapsed, desc=None, width=10):
    """One bar line like tqdm's: ``desc: 100%|##########| 150/150 [00:01<00:00, 123.45it/s]``."""
    rate = n / elapsed if elapsed > 0 else None
    prefix = (desc + ": ") if desc else ""
    rate_s = "{:.2f}it/s".format(rate) if rate else "?it/s"
    if total:
        frac = min(max(n / total, 0.0), 1.0)
        filled = int(frac * width)
        bar = "#" * filled + " " * (width - filled)
        remaining = (total - n) / rate if rate else None
        return "{}{:3d}%|{}| {}/{} [{}<{}, {}]".format(
            prefix, int(frac * 100), bar, n, total, _fmt_time(elapsed),
            _fmt_time(remaining) if remaining is not None else "?", rate_s)
    return "{}{} [{}, {}]".format(prefix, n, _fmt_time(elapsed), rate_s)


class SimpleBar:
    """The fallback bar: redraws in place on a terminal at most every ``mininterval`` seconds,
    and writes one final line on ``close`` (the only line when the stream is not a terminal)."""

    def __init__(self, total=None, desc=None, disable=False, file=None, mininterval=0.1,
                 iterable=None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.disable = total, desc, disable
        self.file = file if file is not None else sys.stderr
        self.mininterval = mininterval
        self.n = 0
        self.start = time.monotonic()
        self._last_draw = self.start
        self._closed = False
        try:
            self._tty = self.file.isatty()
        except (AttributeError, ValueError):
            self._tty = False

    def update(self, n=1):
        self.n += n
        if self._tty and not self.disable:
            now = time.monotonic()
            if now - self._last_draw >= self.mininterval:
                self._last_draw = now
                self.file.write("\r" + format_bar(self.n, self.total, now - self.start, self.desc))
                self.file.flush()

    def close(self):
        if self._closed:
            return
        self._closed = True
        if not self.disable:
            line = format_bar(self.n, self.total, time.monotonic() - self.start, self.desc)
            self.file.write(("\r" if self._tty else "") + line + "\n")
            self.file.flush()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress(total=None, desc=None, disable=False, iterable=None, file=None, use_tqdm=None):
    """A progress bar on stderr: ``tqdm`` if it is installed (``use_tqdm=None``/``True``), else
    ``SimpleBar``. Both have ``update(n=1)``, ``close()``, context-manager use and iteration
    over ``iterable``."""
    file = file if file is not None else sys.stderr
    if use_tqdm is not False:
        try:
            from tqdm import tqdm
        except ImportError:
            if use_tqdm:
                raise
        else:
            return tqdm(iterable=iterable, total=total, desc=desc, disable=disable, file=file)
    return SimpleBar(total=total, desc=desc, disable=disable, file=file, iterable=iterable)
