"""Complete training state, saved atomically every N steps; the last two checkpoints are kept.

A checkpoint is a folder ``<run_dir>/checkpoints/step_<step>/`` holding ``state.pt`` (networks, targets,
optimizers, temperatures, RNG states, counters: any ``torch.save``-able dict), one sub-folder per replay
buffer (:meth:`PerTaskReplayBuffer.dumps`), copies of extra files (the run's CSV logs: its evaluation history),
and ``MANIFEST.json`` (size of every file, CRC32 of the small ones). It is written under a temporary name and
renamed when complete, so a crash mid-save never leaves a half-written checkpoint under a real name.
:meth:`load_latest` tries the newest checkpoint and falls back to the previous one when the newest is corrupt
or truncated, saying so; the bad one is renamed ``corrupt-step_<step>`` so that it is never tried again.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdmt.data import PerTaskReplayBuffer

log = logging.getLogger(__name__)
PREFIX = "step_"
STORE = "replay_"  # checkpoints/replay_<name>/: the replay segments the checkpoints share
MANIFEST = "MANIFEST.json"
CRC_MAX_BYTES = 64 << 20  # files up to this size get a CRC32 (state.pt, metadata, logs); larger ones a size check


def rng_state() -> dict[str, Any]:
    """Every RNG a training loop draws from (torch CPU and CUDA, numpy, random)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read."""


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _manifest(folder: Path) -> dict[str, dict[str, int]]:
    """``{relative path: {"size": bytes, "crc32": ...}}`` of every file under ``folder``."""
    entries = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        entry = {"size": size}
        if size <= CRC_MAX_BYTES:
            entry["crc32"] = _crc32(path)
        entries[str(path.relative_to(folder))] = entry
    return entries


def verify(folder: Path) -> None:
    """Raise :class:`CheckpointError` naming the first missing, truncated or altered file of a checkpoint."""
    manifest_file = folder / MANIFEST
    if not manifest_file.exists():
        raise CheckpointError(f"{folder} is incomplete (no {MANIFEST})")
    for name, expected in json.loads(manifest_file.read_text()).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing")
        size = path.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(f"{path} is truncated or altered: {size} bytes, expected {expected['size']}")
        if "crc32" in expected and _crc32(path) != expected["crc32"]:
            raise CheckpointError(f"{path} is corrupt: CRC32 mismatch")


class CheckpointManager:
    """Save/restore ``(state dict, replay buffers, extra files)`` under ``run_dir/checkpoints``."""

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

    def _remove_stale_temporaries(self) -> None:
        """Folders left by a save that was killed midway (never renamed, so never read)."""
        for tmp in self.folder.glob(f".tmp-{PREFIX}*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def save(self, step: int, state: dict[str, Any], buffers: Mapping[str, PerTaskReplayBuffer] | None = None,
             files: Mapping[str, str | os.PathLike] | None = None) -> Path:
        """Write checkpoint ``step``; ``files`` maps a name to a file copied into it (if it exists)."""
        final = self.folder / f"{PREFIX}{step:010d}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        tmp = self.folder / f".tmp-{PREFIX}{step:010d}-{os.getpid()}"
        tmp.mkdir()
        torch.save({"step": step, "state": state, "buffers": sorted(buffers or {})}, tmp / "state.pt")
        for name, buffer in (buffers or {}).items():  # only what was added since the last checkpoint
            meta = buffer.save_increment(self.folder / f"{STORE}{name}")
            (tmp / f"buffer_{name}.json").write_text(json.dumps(meta))
        for name, src in (files or {}).items():
            if Path(src).exists():
                (tmp / "files").mkdir(exist_ok=True)
                shutil.copyfile(src, tmp / "files" / name)
        (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp)))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        self._remove_dead_segments()
        return final

    def _remove_dead_segments(self) -> None:
        """Delete the replay segments that no kept checkpoint lists (their transitions were overwritten)."""
        for store in self.folder.glob(f"{STORE}*"):
            name = store.name[len(STORE):]
            wanted = set()
            for ckpt in self.checkpoints():
                meta = ckpt / f"buffer_{name}.json"
                if meta.exists():
                    wanted.update(json.loads(meta.read_text())["segments"])
            for segment in store.iterdir():
                if segment.name not in wanted:
                    shutil.rmtree(segment, ignore_errors=True)

    def _read(self, path: Path, buffers: Mapping[str, PerTaskReplayBuffer]) -> tuple[int, dict[str, Any]]:
        verify(path)
        payload = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
        missing = [n for n in buffers if n not in payload["buffers"]]
        if missing:
            raise CheckpointError(f"{path} has no replay buffer named {missing}; it has {payload['buffers']}")
        for name, buffer in buffers.items():
            if (path / f"buffer_{name}").is_dir():  # a checkpoint written before incremental replay segments
                buffer.loads(path / f"buffer_{name}")
            else:
                buffer.load_increments(self.folder / f"{STORE}{name}",
                                       json.loads((path / f"buffer_{name}.json").read_text()))
        return payload["step"], payload["state"]

    def _quarantine(self, path: Path) -> None:
        target = path.with_name("corrupt-" + path.name)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(path, target)

    def load_latest(self, buffers: Mapping[str, PerTaskReplayBuffer] | None = None
                    ) -> tuple[int, dict[str, Any]] | None:
        """``(step, state)`` of the newest readable checkpoint (buffers restored in place), or ``None``.

        A checkpoint that fails to read is reported and the previous one is tried; once one reads, the bad ones
        are renamed ``corrupt-step_*``. When none reads, :class:`CheckpointError` lists why (nothing is renamed).
        """
        candidates = self.checkpoints()
        errors, bad = [], []
        for path in reversed(candidates):
            try:
                found = self._read(path, buffers or {})
            except Exception as e:  # noqa: BLE001 - any read failure means: try the previous checkpoint
                msg = f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); trying the previous one"
                log.warning(msg)
                print(f"[tdmt] WARNING: {msg}", flush=True)
                errors.append(msg)
                bad.append(path)
                continue
            for path_bad in bad:  # only once a good one is found: a run never silently restarts from scratch
                self._quarantine(path_bad)
            return found
        if candidates:
            raise CheckpointError("no readable checkpoint: " + " | ".join(errors))
        return None

    def files_of(self, step: int) -> Path | None:
        """The folder of extra files saved with checkpoint ``step`` (``None`` if it has none)."""
        folder = self.folder / f"{PREFIX}{step:010d}" / "files"
        return folder if folder.is_dir() else None
