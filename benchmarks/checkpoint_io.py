"""Checkpoint cost as a run goes on: tdmt's incremental checkpoints (each writes only the transitions added since
the previous one) against the reference, a full rewrite of the filled buffer at every checkpoint (what tdmt did
before: ``PerTaskReplayBuffer.dumps``), in one run; medians of repeats, seconds and bytes written.

A TD3-sized network set (6 x 400x400) and a per-task replay of K tasks x C transitions (obs 20, action 6); the run
fills ``--filled`` transitions per task, then adds ``--added`` per task between two checkpoints.

    python benchmarks/checkpoint_io.py [--tasks 8] [--capacity 1000000] [--filled 200000] [--added 10000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tensordict import TensorDict

from tdmt.checkpoint import CheckpointManager, verify
from tdmt.data import PerTaskReplayBuffer


def transitions(tasks: int, per_task: int) -> TensorDict:
    n = tasks * per_task
    nxt = {"observation": torch.randn(n, 20), "reward": torch.randn(n, 1), "done": torch.zeros(n, 1, dtype=torch.bool)}
    return TensorDict({"observation": torch.randn(n, 20), "action": torch.randn(n, 6),
                       "task_id": torch.arange(n) % tasks, "next": nxt}, [n])


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def one_round(args: argparse.Namespace, state: dict, folder: str | None) -> dict[str, float]:
    """Fill, checkpoint, add, checkpoint again: the second checkpoint's cost, incremental and full rewrite."""
    rb = PerTaskReplayBuffer(args.tasks, args.capacity, 256)
    rb.extend(transitions(args.tasks, args.filled))
    run_dir = Path(tempfile.mkdtemp(dir=folder))
    try:
        manager = CheckpointManager(run_dir)
        manager.save(1, state, {"replay": rb})
        rb.extend(transitions(args.tasks, args.added))
        before = folder_bytes(run_dir)
        start = time.perf_counter()
        path = manager.save(2, state, {"replay": rb})
        incremental = time.perf_counter() - start
        written = folder_bytes(run_dir) - before
        start = time.perf_counter()
        verify(path)
        verified = time.perf_counter() - start
        start = time.perf_counter()
        torch.save(state, run_dir / "full_state.pt")
        rb.dumps(run_dir / "full_replay")
        full = time.perf_counter() - start
        full_bytes = folder_bytes(run_dir / "full_replay") + (run_dir / "full_state.pt").stat().st_size
    finally:
        shutil.rmtree(run_dir)
    return {"incremental_s": incremental, "incremental_bytes": written, "full_s": full, "full_bytes": full_bytes,
            "verify_s": verified}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--filled", type=int, default=200_000)
    parser.add_argument("--added", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    state = {"networks": {f"w{i}": torch.randn(400, 400) for i in range(6)}}
    rounds = [one_round(args, state, args.dir) for _ in range(args.repeats)]
    med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"K={args.tasks}, C={args.capacity} per task, {args.filled} filled then {args.added} added per task; "
          f"the second checkpoint, median of {args.repeats}:")
    print(f"  full rewrite (reference):  {med['full_s']:.3f} s, {med['full_bytes'] / 1e6:.1f} MB")
    print(f"  incremental (tdmt):        {med['incremental_s']:.3f} s, {med['incremental_bytes'] / 1e6:.1f} MB  "
          f"({med['full_s'] / med['incremental_s']:.1f}x faster, {med['full_bytes'] / med['incremental_bytes']:.1f}x "
          "less written)")
    print(f"  verify before resume:      {med['verify_s']:.3f} s")


if __name__ == "__main__":
    main()
