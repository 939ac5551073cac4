"""Complete training state, saved atomically every N steps; the last two checkpoints are kept.

A checkpoint is a folder ``<run_dir>/checkpoints/step_<step>/`` holding ``state.pt`` (networks, targets,
optimizers, temperatures, RNG states, counters: any ``torch.save``-able dict) and one sub-folder per replay
buffer (:meth:`PerTaskReplayBuffer.dumps`). It is written under a temporary name and renamed when complete,
so a crash mid-save never leaves a half-written checkpoint under a real name. :meth:`load_latest` tries the
newest checkpoint and falls back to the previous one when the newest is corrupt or truncated, saying so.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdmt.data import PerTaskReplayBuffer

log = logging.getLogger(__name__)
PREFIX = "step_"


def rng_state() -> dict[str, Any]:
    """Every RNG a training loop draws from (torch, numpy, random)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read."""


class CheckpointManager:
    """Save/restore ``(state dict, replay buffers)`` under ``run_dir/checkpoints``."""

    def __init__(self, run_dir: str | os.PathLike, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.folder = Path(run_dir) / "checkpoints"
        self.keep = keep

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.folder.exists():
            return []
        found = [p for p in self.folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
        return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))

    def save(self, step: int, state: dict[str, Any], buffers: dict[str, PerTaskReplayBuffer] | None = None) -> Path:
        final = self.folder / f"{PREFIX}{step:010d}"
        tmp = self.folder / f".tmp-{PREFIX}{step:010d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save({"step": step, "state": state, "buffers": sorted(buffers or {})}, tmp / "state.pt")
        for name, buffer in (buffers or {}).items():
            buffer.dumps(tmp / f"buffer_{name}")
        (tmp / "COMPLETE").write_text(str(step))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _read(self, path: Path, buffers: dict[str, PerTaskReplayBuffer]) -> tuple[int, dict[str, Any]]:
        if not (path / "COMPLETE").exists():
            raise CheckpointError(f"{path} is incomplete (no COMPLETE marker)")
        payload = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
        missing = [n for n in buffers if n not in payload["buffers"]]
        if missing:
            raise CheckpointError(f"{path} has no replay buffer named {missing}; it has {payload['buffers']}")
        for name, buffer in buffers.items():
            buffer.loads(path / f"buffer_{name}")
        return payload["step"], payload["state"]

    def load_latest(self, buffers: dict[str, PerTaskReplayBuffer] | None = None) -> tuple[int, dict[str, Any]] | None:
        """``(step, state)`` of the newest readable checkpoint (buffers restored in place), or ``None``."""
        candidates = self.checkpoints()
        errors = []
        for path in reversed(candidates):
            try:
                return self._read(path, buffers or {})
            except Exception as e:  # noqa: BLE001 - any read failure means: try the previous checkpoint
                msg = f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); trying the previous one"
                log.warning(msg)
                print(f"[tdmt] WARNING: {msg}", flush=True)
                errors.append(msg)
        if candidates:
            raise CheckpointError("no readable checkpoint: " + " | ".join(errors))
        return None
