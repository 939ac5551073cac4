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

The folder holds ``config.yaml``, ``metrics.csv``, ``eval.csv``, ``checkpoints/``, ``state.json`` (running /
stopped / failed / done, the step, the PID and host), and at the end ``summary.json`` (its presence means "done" to
the sweep launcher), ``results.md`` and ``curves.png``.

Safety rules (a user's results are never lost or mixed):

* a folder is locked (:class:`RunLock`) while a process trains in it: a second process is refused, naming the
  holder's PID and host; the lock of a process that died is taken over, saying so;
* a folder that already holds a run is resumed only with the same config (:func:`check_resume`): keys that name the
  run must be equal, step budgets may only grow, where it runs and how it reports may change; ``config.yaml``
  is rewritten only after that check.

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
import datetime
import fcntl
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tdmt.checkpoint import CheckpointManager, rng_state, set_rng_state
from tdmt.config import load_yaml, save_yaml, to_dict
from tdmt.data import PerTaskReplayBuffer
from tdmt.errors import UserError
from tdmt.logger import MetricsLog, RunLoggers

SUMMARY = "summary.json"
CONFIG = "config.yaml"
STATE = "state.json"
LOCK = ".lock"
RUN_STATES = ("running", "stopped", "failed", "done")


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


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` for as long as this process trains in the folder.

    The file names the holder (PID, host, start time) so that a refused process can say who holds it. The kernel
    drops the lock when its holder dies, so a dead holder's lock is simply taken over (and said so). One process
    may open the same folder again (a resume in the same interpreter): the lock is counted, not re-taken.
    """

    _held: dict[Path, tuple[int, int]] = {}  # resolved folder -> (fd, count) held by this process

    def __init__(self, folder: Path):
        self.path = (folder / LOCK).resolve()
        self.released = False
        if self.path in RunLock._held:
            fd, count = RunLock._held[self.path]
            RunLock._held[self.path] = (fd, count + 1)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise UserError(f"run folder {folder} is in use by PID {holder.get('pid', '?')} on host "
                            f"{holder.get('host', '?')} (since {holder.get('since', '?')}); wait for it to end, "
                            "or choose another run_dir") from None
        previous = self._holder(fd)
        if previous.get("pid") not in (None, os.getpid()):
            print(f"[tdmt] took over the lock of {folder} from PID {previous['pid']} on host "
                  f"{previous.get('host', '?')}, which is no longer running", flush=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        RunLock._held[self.path] = (fd, 1)

    @staticmethod
    def _holder(fd: int) -> dict[str, Any]:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (ValueError, OSError):
            return {}

    def release(self) -> None:
        if self.released or self.path not in RunLock._held:
            return
        self.released = True
        fd, count = RunLock._held[self.path]
        if count > 1:
            RunLock._held[self.path] = (fd, count - 1)
            return
        del RunLock._held[self.path]
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def config_differences(saved: dict[str, Any], cfg: Any) -> list[str]:
    """What stops ``cfg`` from resuming a run saved with ``saved``: ``key: saved -> new`` for every key that names
    the run, and for every step budget that would shrink (``FREE_KEYS`` may change freely)."""
    new = to_dict(cfg)
    free = set(getattr(cfg, "FREE_KEYS", ("run_dir",)))
    budgets = set(getattr(cfg, "BUDGET_KEYS", ()))
    out = []
    for key in sorted(set(saved) | set(new)):
        old_value, new_value = saved.get(key, "<absent>"), new.get(key, "<absent>")
        if key in free or old_value == new_value:
            continue
        if key in budgets and isinstance(old_value, (int, float)) and isinstance(new_value, (int, float)):
            if new_value >= old_value:
                continue
            out.append(f"{key}: {old_value} -> {new_value} (a step budget can only grow on resume)")
            continue
        out.append(f"{key}: {old_value!r} -> {new_value!r}")
    return out


def check_resume(folder: Path, cfg: Any) -> None:
    """Refuse (one line, naming the differing keys) to resume the run in ``folder`` with a config that trains
    differently; nothing in the folder is touched before this check."""
    path = folder / CONFIG
    if not path.exists():
        return
    diffs = config_differences(load_yaml(path), cfg)
    if diffs:
        raise UserError(f"{folder} holds a run with another config ({'; '.join(diffs)}): resume it with its own "
                        "config, or leave run_dir empty to get a folder of this config's own")


class TrainingRun:
    """Run folder plumbing for one training loop (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike, cfg: Any = None, checkpoint_every: int = 0, keep: int = 2):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.dir)
        try:
            if cfg is not None:
                check_resume(self.dir, cfg)
                save_yaml(cfg, self.dir / CONFIG)
            self.loggers = RunLoggers(getattr(cfg, "logger", ("csv",)), self.dir, exp_name=self.dir.name)
        except BaseException:
            self.lock.release()
            raise
        self.metrics = MetricsLog(self.dir / "metrics.csv", self.loggers)
        self.evals = MetricsLog(self.dir / "eval.csv", self.loggers)
        self.checkpoints = CheckpointManager(self.dir, keep=keep)
        self.checkpoint_every = checkpoint_every
        self.resumed_from: int | None = None
        self._pending: tuple[str, int | None] | None = None  # (action, signal) to apply at the next step boundary
        self.set_state("running", self._saved_step())

    def _saved_step(self) -> int:
        """The step of the newest checkpoint (0 if none)."""
        newest = self.checkpoints.checkpoints()[-1:]
        return int(newest[0].name.split("_")[-1]) if newest else 0

    def set_state(self, state: str, step: int, error: str = "") -> None:
        """Write ``state.json`` (atomically): what ``tdmt runs`` / ``tdmt status`` show for this folder."""
        info = {"state": state, "step": step, "pid": os.getpid(), "host": socket.gethostname(),
                "time": datetime.datetime.now().isoformat(timespec="seconds")}
        if error:
            info["error"] = error
        tmp = self.dir / (STATE + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.dir / STATE)

    @property
    def done(self) -> bool:
        return (self.dir / SUMMARY).exists()

    def resume(self, load_state: Callable[[dict], None], buffers: dict[str, PerTaskReplayBuffer] | None = None) -> int:
        """Restore the newest readable checkpoint (state, buffers, RNG) and trim logs past it; 0 if none."""
        found = self.checkpoints.load_latest(buffers)
        if found is None:
            return 0
        step, state = found
        self.set_state("running", step)
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
        except (StopRequested, KeyboardInterrupt):
            self.set_state("stopped", guard.step)
            self.lock.release()
            raise
        except BaseException as e:
            self.set_state("failed", guard.step, f"{type(e).__name__}: {e}")
            self.lock.release()
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def finish(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json`` atomically: the run is complete."""
        tmp = self.dir / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(_strict_json(summary), indent=2, default=float, allow_nan=False))
        os.replace(tmp, self.dir / SUMMARY)
        self.set_state("done", int(summary.get("step", self._saved_step()) or 0))
        self.lock.release()


def _strict_json(value: Any) -> Any:
    """NaN and infinities as ``null``: ``summary.json`` is strict JSON."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


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
            raise StopRequested(f"stopped at step {step} ({name}; saved in {self.run.dir}) — run the same command "
                                "to resume", signum)
