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


class StopRequested(Exception):
    """Raised at a step boundary after a stop request (SIGTERM, SIGUSR2, Ctrl-C) once the state is saved."""


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
        self._stop = False

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
        self.metrics.truncate_after(step)
        self.evals.truncate_after(step)
        print(f"[tdmt] resumed {self.dir} from step {step}", flush=True)
        return step

    def save(self, step: int, get_state: Callable[[], dict], buffers: dict[str, PerTaskReplayBuffer] | None = None):
        return self.checkpoints.save(step, {"train": get_state(), "rng": rng_state()}, buffers)

    def maybe_checkpoint(self, step: int, get_state: Callable[[], dict],
                         buffers: dict[str, PerTaskReplayBuffer] | None = None) -> None:
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            self.save(step, get_state, buffers)

    def request_stop(self, *_: Any) -> None:
        """Ask the loop to save and stop at its next step boundary (usable as a signal handler)."""
        self._stop = True

    @contextlib.contextmanager
    def guard(self, get_state: Callable[[], dict], buffers: dict[str, PerTaskReplayBuffer] | None = None
              ) -> Iterator[_Guard]:
        """Within the block, SIGTERM/SIGUSR2 request a stop; Ctrl-C or a stop request saves the state."""
        guard = _Guard(self, get_state, buffers)
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGUSR2):
            with contextlib.suppress(ValueError):  # not in the main thread: leave signals alone
                previous[sig] = signal.signal(sig, self.request_stop)
        try:
            yield guard
        except KeyboardInterrupt:
            guard.save_now()
            raise
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
        """Call at each step boundary: records the step, and on a stop request saves and raises."""
        self.step = step
        if self.run._stop:
            self.save_now()
            raise StopRequested(f"stopped at step {step}; state saved in {self.run.dir}")
