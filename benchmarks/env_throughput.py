"""Env throughput and replay sample latency, each against a named reference, in one run (medians of repeats).

1. ``make_env("halfcheetah-mt8")`` (one TorchRL env, batch [8]) vs raw gymnasium ``SyncVectorEnv`` of the same 8
   tasks, random actions; steps/s counts single-task env steps (8 per batched step).
2. One ``[8, 256]`` draw from ``PerTaskReplayBuffer`` holding 1e6 transitions per task vs TorchRL's
   ``ReplayBufferEnsemble`` of 8 ``LazyTensorStorage`` buffers (``sample_from_all=True``).

    python benchmarks/env_throughput.py [--steps 2000] [--repeats 5] [--capacity 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from tdmt.data import PerTaskReplayBuffer
from tdmt.envs import get_suite, make_env

SUITE = "halfcheetah-mt8"


def tdmt_env_steps_per_s(steps: int) -> float:
    env = make_env(SUITE, seed=0)
    td = env.reset()
    actions = torch.rand(steps, *env.action_spec.shape) * 2 - 1
    start = time.perf_counter()
    for t in range(steps):
        td["action"] = actions[t]
        _, td = env.step_and_maybe_reset(td)
    return steps * env.batch_size.numel() / (time.perf_counter() - start)


def raw_gymnasium_steps_per_s(steps: int) -> float:
    names = get_suite(SUITE).task_names
    vec = gym.vector.SyncVectorEnv([lambda n=n: gym.make(f"tdmt/{n}-v0") for n in names])
    vec.reset(seed=0)
    actions = np.random.uniform(-1, 1, (steps, len(names), 6)).astype(np.float32)
    start = time.perf_counter()
    for t in range(steps):
        vec.step(actions[t])
    return steps * len(names) / (time.perf_counter() - start)


def _fill(capacity: int, k: int = 8, chunk: int = 100_000):
    for start in range(0, capacity, chunk):
        n = min(chunk, capacity - start)
        yield TensorDict({
            "task_id": torch.arange(k).repeat_interleave(n), "observation": torch.randn(k * n, 17),
            "action": torch.rand(k * n, 6), "next": {"observation": torch.randn(k * n, 17),
                                                     "reward": torch.randn(k * n, 1),
                                                     "done": torch.zeros(k * n, 1, dtype=torch.bool)}}, [k * n])


def sample_latency_ms(sample, draws: int = 50) -> float:
    times = []
    for _ in range(draws):
        start = time.perf_counter()
        sample()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def replay_latencies(capacity: int, repeats: int) -> tuple[list[float], list[float]]:
    from torchrl.data import LazyTensorStorage, ReplayBuffer, ReplayBufferEnsemble

    ours = PerTaskReplayBuffer(8, capacity, 256)
    refs = [ReplayBuffer(storage=LazyTensorStorage(capacity)) for _ in range(8)]
    for td in _fill(capacity):
        ours.extend(td)
        for k, part in enumerate(td.reshape(8, -1).unbind(0)):
            refs[k].extend(part)
    ensemble = ReplayBufferEnsemble(*refs, sample_from_all=True, batch_size=8 * 256)
    ours_ms, ref_ms = [], []
    for _ in range(repeats):
        ours_ms.append(sample_latency_ms(ours.sample))
        ref_ms.append(sample_latency_ms(ensemble.sample))
    return ours_ms, ref_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours, raw = [], []
    for _ in range(args.repeats):  # interleaved, so drift of a shared machine hits both alike
        ours.append(tdmt_env_steps_per_s(args.steps))
        raw.append(raw_gymnasium_steps_per_s(args.steps))
    m_ours, m_raw = statistics.median(ours), statistics.median(raw)
    print(f"env  {SUITE}: tdmt make_env {m_ours:,.0f} steps/s | raw gymnasium SyncVectorEnv {m_raw:,.0f} steps/s "
          f"| ratio {m_ours / m_raw:.2f}x (median of {args.repeats}, {args.steps} batched steps each)")

    ours_ms, ref_ms = replay_latencies(args.capacity, args.repeats)
    m_ours, m_ref = statistics.median(ours_ms), statistics.median(ref_ms)
    print(f"replay [8, 256] from {args.capacity:,} per task: PerTaskReplayBuffer {m_ours:.2f} ms | "
          f"TorchRL ReplayBufferEnsemble {m_ref:.2f} ms | speed-up {m_ref / m_ours:.1f}x (median of {args.repeats})")


if __name__ == "__main__":
    main()
