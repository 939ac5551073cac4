"""Checkpoint cost: :meth:`CheckpointManager.save` with its integrity manifest (sizes + CRC32) against the same save
without the manifest (the reference), and the time to verify a checkpoint before resuming; medians of repeats.

The state is a TD3-sized network set (6 x 400x400) and a per-task replay buffer of K tasks x C transitions
(obs 20, action 6) written to ``--dir`` (default: the system temp folder).

    python benchmarks/checkpoint_io.py [--tasks 8] [--capacity 100000] [--repeats 3] [--dir /scratch]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import torch
from tensordict import TensorDict

import tdmt.checkpoint as ck
from tdmt.data import PerTaskReplayBuffer


def make_buffer(tasks: int, capacity: int) -> PerTaskReplayBuffer:
    n = tasks * capacity
    td = TensorDict({"observation": torch.randn(n, 20), "action": torch.randn(n, 6), "task_id": torch.arange(n) % tasks,
                     "next": {"observation": torch.randn(n, 20), "reward": torch.randn(n, 1),
                              "done": torch.zeros(n, 1, dtype=torch.bool)}}, [n])
    rb = PerTaskReplayBuffer(tasks, capacity, 256)
    rb.extend(td)
    return rb


def time_saves(rb: PerTaskReplayBuffer, state: dict, repeats: int, folder: str | None,
               manifest: bool) -> tuple[float, float]:
    """Median seconds of one save, and of one :func:`verify` (0 without a manifest)."""
    original = ck._manifest
    if not manifest:
        ck._manifest = lambda _folder: {}
    saves, verifies = [], []
    try:
        for _ in range(repeats):
            run_dir = tempfile.mkdtemp(dir=folder)
            manager = ck.CheckpointManager(run_dir)
            start = time.perf_counter()
            path = manager.save(1, state, {"replay": rb})
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            ck.verify(path)
            verifies.append(time.perf_counter() - start)
            shutil.rmtree(run_dir)
    finally:
        ck._manifest = original
    return statistics.median(saves), statistics.median(verifies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    rb = make_buffer(args.tasks, args.capacity)
    state = {"networks": {f"w{i}": torch.randn(400, 400) for i in range(6)}}
    mb = args.tasks * args.capacity * (20 + 6 + 1 + 20 + 1) * 4 / 1e6
    reference, _ = time_saves(rb, state, args.repeats, args.dir, manifest=False)
    with_manifest, verify = time_saves(rb, state, args.repeats, args.dir, manifest=True)
    print(f"checkpoint of ~{mb:.0f} MB (K={args.tasks}, C={args.capacity}), median of {args.repeats}:")
    print(f"  save without manifest (reference): {reference:.3f} s")
    print(f"  save with manifest:                {with_manifest:.3f} s  ({with_manifest / reference:.2f}x reference)")
    print(f"  verify before resume:              {verify:.3f} s")


if __name__ == "__main__":
    main()
