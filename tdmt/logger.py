"""CSV metric logs that survive interruption: rows are appended and flushed one at a time.

A run writes ``metrics.csv`` (training scalars) and ``eval.csv`` (per-task evaluation history). On resume,
:meth:`CSVLog.restore` drops rows written after the checkpoint (and falls back to the copy saved inside the
checkpoint when the live file lost rows), so a resumed run has no duplicate and no missing row.
TensorBoard/W&B can be added on top with TorchRL's loggers; CSV is the format every tdmt
report reads.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

# The loggers a run can write to (``logger=csv,tensorboard``); CSV is always written: reports read it.
LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")


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
