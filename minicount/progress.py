"""Progress of long work (training, a sweep, an analysis), shown the way its reader sees it.

In a terminal, a tqdm bar with its rate and estimated time left, and messages written above
it. Anywhere else (a log file, CI, a pipe), plain lines: each message carries the time spent
and an estimate of what is left, and a status line is printed every ``every_s`` seconds
even when no message comes, so that a log never goes silent for long.

This module only writes to its stream (stderr by default); it holds no global state.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """Count ``total`` units of work (``unit``: "step", "model", ...), starting at ``done``.

    advance(n) counts n more units; skip_to(done) counts work done before (left out of the
    rate); line(text) prints a message; describe(text) names the
    part of the work in hand (a setting, an instrument); close() ends the bar. A disabled
    Progress prints nothing. ``tty`` overrides the terminal test (for tests)."""

    def __init__(
        self,
        total: float,
        *,
        unit: str = "step",
        done: float = 0,
        desc: str = "",
        enabled: bool = True,
        stream=None,
        every_s: float = 10.0,
        tty: bool | None = None,
    ):
        self.total, self.unit, self.done, self.desc = total, unit, done, desc  # ints stay ints
        self.enabled, self.every_s = enabled, every_s
        self.stream = sys.stderr if stream is None else stream
        self.t0 = self.last_print = time.perf_counter()
        self.start = self.done  # units done before this process: not part of its rate
        self.bar = None
        in_terminal = self.stream.isatty() if tty is None else tty
        if enabled and in_terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit=f" {unit}", desc=desc or None,
                            file=self.stream, dynamic_ncols=True, leave=True)  # fmt: skip

    def advance(self, n: float = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.perf_counter() - self.last_print >= self.every_s:
            self._print(self.status())

    def set_done(self, done: float) -> None:
        """Set the count to ``done`` (after work that was counted elsewhere or skipped)."""
        self.advance(done - self.done)

    def skip_to(self, done: float) -> None:
        """Set the count to ``done`` for work done before this process (a resumed run's): it
        shows as done but stays out of the rate and the estimate of time left."""
        delta = done - self.done
        self.done, self.start = done, self.start + delta
        if self.bar is not None:  # moved without update(), so tqdm's rate ignores it too
            self.bar.n += delta
            self.bar.last_print_n += delta
            self.bar.initial += delta
            self.bar.refresh()

    def set_total(self, total: float) -> None:
        """Change the amount of work (when it is known only once the work has begun)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def describe(self, desc: str) -> None:
        self.desc = desc
        if self.bar is not None:
            self.bar.set_description(desc or None)

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self._print(text + self.eta())

    def status(self) -> str:
        """One plain line: where the work stands, its rate and what is left."""
        spent = time.perf_counter() - self.t0
        rate = (self.done - self.start) / spent if spent > 0 else 0.0
        where = f"{self.desc}: " if self.desc else ""
        return (
            f"{where}{self.done:.0f}/{self.total:.0f} {self.unit}s, "
            f"{rate:.3g} {self.unit}s/s{self.eta()}"
        )

    def eta(self) -> str:
        """' (about Ns left)' from the rate so far, or '' before there is one or at the end."""
        worked = self.done - self.start
        if worked <= 0 or self.done >= self.total:
            return ""
        spent = time.perf_counter() - self.t0
        return f" (about {spent * (self.total - self.done) / worked:.0f}s left)"

    def _print(self, text: str) -> None:
        self.last_print = time.perf_counter()
        print(f"[{self.last_print - self.t0:7.1f}s] {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
