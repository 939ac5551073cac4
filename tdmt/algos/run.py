"""What every training loop shares: its run folder, logs, periodic atomic checkpoints, resume, and the
interruption rule (a stop request or Ctrl-C saves the state at the next step boundary, so nothing run is lost).

A training loop uses it like this::

    run = TrainingRun(cfg.run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    step = run.resume(load_state, buffers={"replay": rb})      # 0 on a fresh run
    with run.guard(lambda: get_state(), buffers={"replay": rb}) as guard:
        while step < total:
            ...one step...
            step += 1
            run.maybe_checkpoint(step, get_state, {"replay": rb})
            guard.check(step)                                   # saves and raises StopRequested if asked
    run.finish({"final_return": ...})                          # writes summary.json: the run is done

The folder holds ``config.yaml``, ``metrics.csv``, ``eval.csv``, ``checkpoints/``, and at the end
``summary.json`` (its presence means "done" to the sweep launcher), ``results.md`` and ``curves.png``.

Rules that make an interrupted-and-resumed run end like an uninterrupted one:

* everything logged for step ``s`` (metrics, eval rows) is logged during iteration ``s``, before
  ``guard.check(s)``; ``resume`` keeps the rows with step <= the checkpoint's step and drops the rest;
* ``get_state()`` holds every counter the loop needs (updates done, episodes, best eval, ...);
* signals never interrupt a step: SIGTERM, SIGUSR2 and the first Ctrl-C are handled at the next step boundary
  (a second Ctrl-C stops at once, leaving the last periodic checkpoint). What a signal does is set by
  :func:`signal_actions`: ``"stop"`` (the default: save, then raise :class:`StopRequested`) or ``"save"``
  (save and continue; the sweep launcher uses it for SIGTERM, which SLURM sends before SIGUSR2 on preemption).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tdmt.checkpoint import CheckpointManager, rng_state, set_rng_state
from tdmt.config import save_yaml
from tdmt.data import PerTaskReplayBuffer
from tdmt.logger import CSVLog

SUMMARY = "summary.json"


ACTIONS = ("stop", "save", "ignore")
_signal_actions: dict[int, str] = {signal.SIGTERM: "stop", signal.SIGUSR2: "stop", signal.SIGINT: "stop"}


class StopRequested(Exception):
    """Raised at a step boundary after a stop request (SIGTERM, SIGUSR2, Ctrl-C) once the state is saved.

    ``signum`` is the signal that asked for the stop (``None`` when :meth:`TrainingRun.request_stop` was called).
    """

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        self.signum = signum


@contextlib.contextmanager
def signal_actions(actions: dict[int, str]) -> Iterator[None]:
    """Within the block, training guards apply ``actions`` (signal number -> "stop" | "save" | "ignore")."""
    bad = {sig: a for sig, a in actions.items() if a not in ACTIONS or sig not in _signal_actions}
    if bad:
        raise ValueError(f"bad signal actions {bad}; signals: {sorted(_signal_actions)}, actions: {list(ACTIONS)}")
    previous = dict(_signal_actions)
    _signal_actions.update(actions)
    try:
        yield
    finally:
        _signal_actions.clear()
        _signal_actions.update(previous)


class TrainingRun:
    """Run folder plumbing for one training loop (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike, cfg: Any = None, checkpoint_every: int = 0, keep: int = 2):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if cfg is not None:
            save_yaml(cfg, self.dir / "config.yaml")
        self.metrics = CSVLog(self.dir / "metrics.csv")
        self.evals = CSVLog(self.dir / "eval.csv")
        self.checkpoints = CheckpointManager(self.dir, keep=keep)
        self.checkpoint_every = checkpoint_every
        self.resumed_from: int | None = None
        self._pending: tuple[str, int | None] | None = None  # (action, signal) to apply at the next step boundary

    @property
    def done(self) -> bool:
        return (self.dir / SUMMARY).exists()

    def resume(self, load_state: Callable[[dict], None], buffers: dict[str, PerTaskReplayBuffer] | None = None) -> int:
        """Restore the newest readable checkpoint (state, buffers, RNG) and trim logs past it; 0 if none."""
        found = self.checkpoints.load_latest(buffers)
        if found is None:
            return 0
        step, state = found
        load_state(state["train"])
        set_rng_state(state["rng"])
        saved_logs = self.checkpoints.files_of(step)
        for csv_log in (self.metrics, self.evals):
            csv_log.restore(saved_logs / csv_log.path.name if saved_logs else None, step)
        self.resumed_from = step
        print(f"[tdmt] resumed {self.dir} from step {step}", flush=True)
        return step

    def save(self, step: int, get_state: Callable[[], dict], buffers: dict[str, PerTaskReplayBuffer] | None = None):
        """Checkpoint ``step``: the loop's state, RNG states, replay buffers and a copy of both CSV logs."""
        logs = {log.path.name: log.path for log in (self.metrics, self.evals)}
        return self.checkpoints.save(step, {"train": get_state(), "rng": rng_state()}, buffers, files=logs)

    def maybe_checkpoint(self, step: int, get_state: Callable[[], dict],
                         buffers: dict[str, PerTaskReplayBuffer] | None = None) -> None:
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            self.save(step, get_state, buffers)

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        """Ask the loop to save and stop at its next step boundary (usable as a signal handler)."""
        self._pending = ("stop", signum)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        """Only records the request (printing here could re-enter a stream the loop is writing to)."""
        action = _signal_actions[signum]
        if signum == signal.SIGINT and self._pending is not None and self._pending[1] == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, the last periodic checkpoint stays the latest
        if action != "ignore" and (self._pending is None or self._pending[0] != "stop"):
            self._pending = (action, signum)

    @contextlib.contextmanager
    def guard(self, get_state: Callable[[], dict], buffers: dict[str, PerTaskReplayBuffer] | None = None
              ) -> Iterator[_Guard]:
        """Within the block, SIGTERM, SIGUSR2 and Ctrl-C act at the next ``guard.check`` (see module docstring)."""
        guard = _Guard(self, get_state, buffers)
        previous = {}
        for sig in _signal_actions:
            with contextlib.suppress(ValueError):  # not in the main thread: leave signals alone
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            yield guard
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def finish(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json`` atomically: the run is complete."""
        tmp = self.dir / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=float))
        os.replace(tmp, self.dir / SUMMARY)


class _Guard:
    def __init__(self, run: TrainingRun, get_state: Callable[[], dict], buffers):
        self.run, self.get_state, self.buffers = run, get_state, buffers
        self.step = 0

    def save_now(self) -> None:
        self.run.save(self.step, self.get_state, self.buffers)
        print(f"[tdmt] saved state at step {self.step} in {self.run.dir}", flush=True)

    def check(self, step: int) -> None:
        """Call at each step boundary: records the step; on a request saves, and for a stop raises."""
        self.step = step
        if self.run._pending is None:
            return
        action, signum = self.run._pending
        self.run._pending = None
        name = signal.Signals(signum).name if signum else "request_stop()"
        print(f"[tdmt] {name} at step {step}: {action}", flush=True)
        self.save_now()
        if action == "stop":
            raise StopRequested(f"stopped at step {step} by {name}; state saved in {self.run.dir}", signum)
