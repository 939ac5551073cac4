"""A second-stage recipe for sweep tests: it needs the finished run of a first stage (``source``), as KTM-DRL
students need their teachers, and records what it found there."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

from tdmt.algos.run import SUMMARY, TrainingRun


@dataclasses.dataclass
class Config:
    suite: str = "pendulum-mt3"
    seed: int = 0
    run_dir: str = ""
    source: str = ""  # the first stage's run folder (a sweep placeholder such as {sweep}/...)

    FREE_KEYS: ClassVar[tuple[str, ...]] = ("run_dir",)


def run(cfg: Config) -> dict:
    found = Path(cfg.source) / SUMMARY
    if not found.exists():
        raise FileNotFoundError(f"the first stage has not finished: no {found}")
    training = TrainingRun(cfg.run_dir, cfg)
    summary = {"source_steps": json.loads(found.read_text())["steps"]}
    training.finish(summary)
    return summary
