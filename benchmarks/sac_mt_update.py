"""Cost of one multi-task SAC update (critics + actor + temperatures + soft target update) per backbone, at the
paper's sizes (CTPG App. F.3: batch 128·K, 2×400 HalfCheetah / 5×400 Meta-World), relative to MTSAC in the same
run (median of repeats, random ``[K, 128]`` batches, no env).

    python benchmarks/sac_mt_update.py [--suites halfcheetah-mt5 metaworld-mt10] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tensordict import TensorDict

from tdmt.algos.sac_mt import Config, MultiTaskSAC
from tdmt.envs import action_masks, get_suite
from tdmt.modules import BACKBONES


def random_batch(suite, n: int) -> TensorDict:
    K, tid = suite.num_tasks, torch.arange(suite.num_tasks)[:, None].expand(suite.num_tasks, n)
    mask = action_masks(suite.act_dims, suite.act_max)[tid]
    flags = torch.zeros(K, n, 1, dtype=torch.bool)
    return TensorDict({
        "observation": torch.randn(K, n, suite.obs_max), "task_id": tid,
        "action": (torch.rand(K, n, suite.act_max) * 2 - 1) * mask,
        "next": {"observation": torch.randn(K, n, suite.obs_max), "task_id": tid, "reward": torch.randn(K, n, 1),
                 "done": flags, "terminated": flags.clone()}}, [K, n])


def update_seconds(suite_name: str, backbone: str, repeats: int) -> float:
    cfg = Config(suite=suite_name, backbone=backbone)
    suite = get_suite(suite_name)
    sac = MultiTaskSAC(cfg, suite)
    batch = random_batch(suite, cfg.batch_size_per_task)
    sac.update(batch.clone(), env_steps=0)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sac.update(batch.clone(), env_steps=0)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suites", nargs="+", default=["halfcheetah-mt5", "metaworld-mt10"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"one SAC update, median of {args.repeats}, {args.threads} thread(s); ratio vs mtsac")
    for suite_name in args.suites:
        reference = None
        for backbone in BACKBONES:
            seconds = update_seconds(suite_name, backbone, args.repeats)
            reference = reference or seconds
            print(f"{suite_name:16s} {backbone:7s} {seconds * 1e3:8.1f} ms/update  {seconds / reference:5.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
