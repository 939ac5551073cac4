"""Metric logs: CSV files that survive interruption, mirrored to TorchRL's loggers (TensorBoard, W&B, MLflow).

A run writes ``metrics.csv`` (training scalars) and ``eval.csv`` (per-task evaluation history); CSV is the format
every tdmt report reads, so it is always written. Rows are appended and flushed one at a time. On resume,
:meth:`CSVLog.restore` drops rows written after the checkpoint (and falls back to the copy saved inside the
checkpoint when the live file lost rows), so a resumed run has no duplicate and no missing row.

``logger=csv,tensorboard`` (the config's ``logger`` tuple) also sends every numeric value of every row to TorchRL's
own loggers (:mod:`torchrl.record.loggers`), created once per run by :class:`RunLoggers` and shared by both logs
(:class:`MetricsLog`): TensorBoard events in ``<run_dir>/tensorboard/``, an offline W&B run in
``<run_dir>/wandb/`` (``WANDB_MODE=online`` logs live), an MLflow SQLite store ``<run_dir>/mlflow.db``
(``MLFLOW_TRACKING_URI`` set: that server).
"""

from __future__ import annotations

import csv
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchrl.record.loggers import Logger

# The loggers a run can write to (``logger=csv,tensorboard``); CSV is always written: reports read it.
LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
# The package each TorchRL logger needs (``pip install tdmt[dev]`` has tensorboard).
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class CSVLog:
    """Append-only CSV of dict rows with a ``step`` column; the header grows when a new key appears."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fields: list[str] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                self.fields = next(csv.reader(f), [])

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def log(self, step: int, **values: Any) -> None:
        row = {"step": step, **values}
        new = [k for k in row if k not in self.fields]
        if new:
            old_rows = self.rows()
            self.fields = self.fields + new if self.fields else list(row)
            self._rewrite(old_rows)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(row)

    def truncate_after(self, step: int) -> None:
        """Drop every row whose step is greater than ``step`` (the checkpoint a run resumes from)."""
        if self.path.exists():
            self._rewrite(_rows_until(self.rows(), step))

    def restore(self, snapshot: str | os.PathLike | None, step: int) -> None:
        """Keep the rows up to ``step``; use ``snapshot`` (this log as saved at checkpoint ``step``) instead
        when the live file is missing, unreadable or holds fewer such rows."""
        try:
            live = _rows_until(self.rows(), step)
        except (csv.Error, UnicodeDecodeError):
            live = []
        saved = _rows_until(CSVLog(snapshot).rows(), step) if snapshot and Path(snapshot).exists() else []
        if len(saved) > len(live):
            self.fields = CSVLog(snapshot).fields
            live = saved
        elif not self.fields and saved:
            self.fields = CSVLog(snapshot).fields
        if self.fields:
            self._rewrite(live)


def _step_of(row: dict[str, Any]) -> int | None:
    try:
        return int(float(row["step"]))
    except (KeyError, TypeError, ValueError):
        return None


def _rows_until(rows: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """Rows with a readable step <= ``step``; a torn last line (a crash mid-write) has fields missing: dropped."""
    kept = []
    for row in rows:
        s = _step_of(row)
        if s is not None and s <= step and None not in row and None not in row.values():
            kept.append(row)
    return kept


class RunLoggers:
    """The TorchRL loggers of one run (``names`` from :data:`LOGGERS`; ``"csv"`` needs none: :class:`CSVLog` is it).

    Created in the run folder, under the run's name (``exp_name``). Each row is flushed at once (rows are rare:
    one per ``log_every``/``eval_every`` steps), so a killed run loses nothing the CSV kept.
    """

    def __init__(self, names: Sequence[str], run_dir: str | os.PathLike, exp_name: str = "tdmt"):
        check_loggers(names)
        self.run_dir = Path(run_dir)
        self._restarted_at: int | None = None
        self.loggers: dict[str, Logger] = {n: _make_logger(n, self.run_dir, exp_name) for n in dict.fromkeys(names)
                                           if n != "csv"}

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Every numeric value of a row (``stage="online"``-like text columns stay in the CSV only)."""
        scalars = {k: float(v) for k, v in values.items()
                   if isinstance(v, numbers.Real) and not isinstance(v, bool)}
        if not scalars:
            return
        for logger in self.loggers.values():
            logger.log_metrics(scalars, step=step)
            logger.flush()

    def restart_at(self, step: int) -> None:
        """A resumed run logs again from ``step + 1``: TensorBoard readers drop the events of the first attempt
        past ``step`` (the same START session event ``SummaryWriter(purge_step=...)`` writes, which TorchRL's
        ``TensorboardLogger`` does not expose)."""
        tb = self.loggers.get("tensorboard")
        if tb is None or self._restarted_at == step:  # the metrics and eval logs share this
            return
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        writer = tb.experiment.file_writer
        writer.add_event(Event(step=step + 1, session_log=SessionLog(status=SessionLog.START)))
        writer.flush()
        self._restarted_at = step

    def close(self) -> None:
        for logger in self.loggers.values():
            logger.close()
        self.loggers = {}


def check_loggers(names: Sequence[str]) -> None:
    """Refuse (one line) an unknown logger name or one whose package is not installed: before any work."""
    import importlib.util

    bad = [n for n in names if n not in LOGGERS]
    if bad or not names:
        raise ValueError(f"logger={list(names)!r} is not valid; valid: one or more of {list(LOGGERS)}")
    for name in names:
        package = _PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise ValueError(f"logger={name} needs the {package} package, which is not installed; "
                             f"pip install {package} (or drop {name} from logger=)")


def _make_logger(name: str, run_dir: Path, exp_name: str) -> Logger:
    """One TorchRL logger writing inside ``run_dir``."""
    from torchrl.record.loggers import MLFlowLogger, TensorboardLogger, WandbLogger

    if name == "tensorboard":
        return TensorboardLogger(exp_name="tensorboard", log_dir=str(run_dir))
    if name == "wandb":
        offline = os.environ.get("WANDB_MODE", "offline") != "online"
        return WandbLogger(exp_name=exp_name, offline=offline, save_dir=str(run_dir), project="tdmt")
    # MLflow's file store ("./mlruns") is refused by MLflow 3 unless opted in: a SQLite store in the run folder,
    # or the user's own server (MLFLOW_TRACKING_URI)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"
    return MLFlowLogger(exp_name=exp_name, tracking_uri=uri, artifact_location=(run_dir.resolve() / "mlruns").as_uri())


class MetricsLog(CSVLog):
    """A :class:`CSVLog` whose rows also go to the run's TorchRL loggers (``log_scalar`` of each numeric value)."""

    def __init__(self, path: str | os.PathLike, loggers: RunLoggers | None = None):
        super().__init__(path)
        self.loggers = loggers

    def log(self, step: int, **values: Any) -> None:
        super().log(step, **values)
        if self.loggers is not None:
            self.loggers.log(step, values)

    def restore(self, snapshot: str | os.PathLike | None, step: int) -> None:
        super().restore(snapshot, step)
        if self.loggers is not None:
            self.loggers.restart_at(step)
