"""Stop signals (SIGTERM, SIGINT, SIGUSR1): a preempted job ends after the optimizer step in progress.

`StopSignals.install()` (ember-train's main) replaces the three signals' handlers with one that
only records the signal while the trainer is inside a `deferred()` block (the step loop, a final.pt
write): the trainer then finishes the step, saves a step checkpoint and raises `Stopped`. Anywhere
else (data preparation, held-out evaluation, the robot-selection recipe) the handler raises
`Interrupted` at once, as Ctrl-C does: the newest checkpoint stands (files are replaced atomically).
Once a signal came, later ones are absorbed (a scheduler's second notice must not cut a checkpoint
write short), except a second SIGINT inside a deferred block: Ctrl-C pressed again aborts at once
(an atomic write in progress is dropped, the previous checkpoint stands). The handler never prints (it may run in the middle of a write to
stderr) and does nothing in a forked child. DataLoader workers ignore the three signals unless
their trainer sends SIGTERM (`ignore_stop_signals`, their worker_init_fn): a scheduler or a
terminal signals every process of the job, and a worker that died of it would fail the step the
trainer is finishing.

Exit codes are 128 + the signal number (130 SIGINT, 138 SIGUSR1, 143 SIGTERM), what a shell reports
for a process the signal killed: non-zero, because the run is not finished (a Kubernetes Job or a
SLURM script must not take it for a completed one), and the code a scheduler's policy expects.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def exit_code(signum: int) -> int:
    """128 + the signal number: 130 for SIGINT, 138 for SIGUSR1, 143 for SIGTERM."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class Interrupted(KeyboardInterrupt):
    """The run ended on a stop signal outside the step loop: the newest checkpoint stands."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)


class Stopped(Interrupted):
    """The run ended on a stop signal after the step in progress, with a checkpoint of that step."""

    def __init__(self, signum: int, stage: int, name: str, step: int, checkpoint: Path) -> None:
        super().__init__(signum)
        self.stage, self.name, self.step, self.checkpoint = stage, name, step, checkpoint


class StopSignals:
    """The process's stop signals: which one came first (`signum`), and whether to defer it."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._deferring = 0
        self._aborted = False
        self._pid = os.getpid()
        self._previous: dict[int, object] = {}

    def install(self) -> StopSignals:
        """Handle the stop signals (main thread only); one this process was started ignoring (a
        background job's SIGINT, nohup) stays ignored. Off the main thread Python cannot: nothing."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:  # a forked child that kept the handler: the parent decides
            return
        if self.signum is None:
            self.signum = signum
            if not self._deferring:
                raise Interrupted(signum)
        elif signum == signal.SIGINT and self._deferring and not self._aborted:  # Ctrl-C again: now
            self._aborted = True
            raise Interrupted(signum)
        # else: a repeated notice while the run is already stopping (it goes on stopping)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside: a stop signal is only recorded (`signum`), the caller stops at its next safe
        point; leaving the block with one recorded and not acted on raises Interrupted."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if not self._deferring and self.signum is not None:
            raise Interrupted(self.signum)


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: the worker ignores SIGINT and SIGUSR1, and SIGTERM from anyone but
    its trainer (the process that started it). The trainer stops its workers itself; its own SIGTERM
    (the loader's terminate() of a worker that did not stop, multiprocessing's at exit) still ends
    one: a worker ignoring that too kept a process that exited with a worker alive waiting for ever.
    SIGTERM is blocked and read by a thread (sigwaitinfo tells who sent it)."""
    for sig in STOP_SIGNALS:
        if sig != signal.SIGTERM:
            signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_end_on_sigterm_from, args=(os.getppid(),), name="ember-worker-sigterm",
                     daemon=True).start()


def _end_on_sigterm_from(trainer: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == trainer:
            os._exit(exit_code(signal.SIGTERM))
