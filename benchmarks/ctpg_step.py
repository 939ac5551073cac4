"""Cost of a CTPG training step relative to the base multi-task SAC step, at the paper's sizes (CTPG App. F.3).

One "step" of the base (MTSAC) is one control update on a ``[K, 128]`` batch. One CTPG step is the same control
update plus 1/H of a guide update (hindsight relabel over the H stored steps × K candidate policies, comparable
entropy bonus, guide critic / comparable critic / actor / temperature step, soft target update) plus 1/H of the
behaviour draw with both gates (guide logits, comparable Q, Monte-Carlo V with M=5 samples, guide-block gate).
Every piece is timed in the same process, interleaved, ``repeats`` times; the medians are reported with the ratio

    ratio = (control + (guide update + draw) / H) / control          (goal: ≤ 1.3)

and the same ratio with ``hindsight=false``. The relabel scores the H stored steps of every guide sample with all K
control policies: K·H·N actor rows, the largest part of the guide update. ``all_tasks`` computes each backbone's
task-independent part once (MHSAC: the whole trunk, so its relabel is cheap); MTSAC shares only the observation half
of its first layer, so on MT10 (5×400) the relabel is ~42 GMAC per guide update against ~14 GMAC for one control
update: at this CPU's GEMM peak that alone adds ~0.24 to the ratio, a floor of ~1.31 with the guide's own SAC step.

The guide batch follows ``guide_batch``: ``spread`` (the default, the public code) keeps 128·K guide transitions
whatever the guide-block gate blocks, so its relabel costs as with no task blocked; ``per_task`` draws 128 per
unblocked task (half the rows with half the tasks blocked). Measured on the 2-core box under load, MTSAC
halfcheetah-mt8: 1.59× with ``spread``, 1.27× with ``per_task`` (metaworld-mt10 ``spread``: 1.67×).

Data is synthetic (random states/actions in the replays): costs do not depend on values.

    python benchmarks/ctpg_step.py                      # MTSAC on halfcheetah-mt8 and metaworld-mt10, 1 thread
    python benchmarks/ctpg_step.py suites=metaworld-mt10 backbones=mtsac,mhsac repeats=30 threads=2 blocked=0.5
    python benchmarks/ctpg_step.py guide_batch=per_task   # 128 guide transitions per unblocked task
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time

import torch
from tensordict import TensorDict

from tdmt.algos.ctpg import Config, CTPGAgent
from tdmt.envs import action_masks, get_suite


def _replays(agent: CTPGAgent, n: int, horizon: int) -> tuple[TensorDict, TensorDict]:
    """One ``[K, n]`` control batch and one ``[K, n]`` guide batch of random data."""
    suite = agent.suite
    K, D, A = suite.num_tasks, suite.obs_max, suite.act_max
    task = torch.arange(K)[:, None].expand(K, n).clone()
    mask = action_masks(suite.act_dims, A)[task]
    control = TensorDict({
        "observation": torch.randn(K, n, D), "task_id": task, "action": (torch.rand(K, n, A) * 2 - 1) * mask,
        "next": {"observation": torch.randn(K, n, D), "task_id": task, "reward": torch.randn(K, n, 1),
                 "done": torch.zeros(K, n, 1, dtype=torch.bool), "terminated": torch.zeros(K, n, 1, dtype=torch.bool)},
    }, batch_size=[K, n])
    guide = TensorDict({
        "observation": torch.randn(K, n, D), "task_id": task, "action": torch.randint(0, K, (K, n)),
        "num_steps": torch.full((K, n), horizon), "seq_observation": torch.randn(K, n, horizon, D),
        "seq_action": (torch.rand(K, n, horizon, A) * 1.8 - 0.9) * mask[:, :, None],
        "seq_valid": torch.ones(K, n, horizon, dtype=torch.bool),
        "next": {"observation": torch.randn(K, n, D), "reward": torch.randn(K, n, 1),
                 "done": torch.zeros(K, n, 1, dtype=torch.bool), "terminated": torch.zeros(K, n, 1, dtype=torch.bool)},
    }, batch_size=[K, n])
    return control, guide


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(suite_name: str, backbone: str, repeats: int, blocked_fraction: float, spread: bool = True
          ) -> dict[str, float]:
    suite = get_suite(suite_name)
    cfg = Config(suite=suite_name, backbone=backbone, guide="ctpg", run_dir="/tmp/unused")
    torch.manual_seed(0)
    agent = CTPGAgent(cfg, suite)
    no_hindsight = CTPGAgent(dataclasses.replace(cfg, hindsight=False), suite)
    K, H, N = suite.num_tasks, cfg.guide_step, cfg.batch_size_per_task
    blocked = torch.zeros(K, dtype=torch.bool)
    blocked[: int(round(blocked_fraction * K))] = True
    active = (~blocked).nonzero().flatten()
    control, _ = _replays(agent, N, H)
    # the guide batch: N·K rows spread over the unblocked tasks (guide_batch=spread, the public code), or N each
    guide = _replays(agent, round(N * K / active.numel()) if spread else N, H)[1][active]
    obs = torch.randn(K, suite.obs_max)
    own = torch.arange(K)

    def draw() -> None:
        agent.guide.choose(obs, own, agent.blocked() & blocked, filter_on=True)

    pieces = {"control": lambda: agent.sac.update(control.clone(), env_steps=1),
              "guide_update": lambda: agent.guide.update(guide.clone()),
              "guide_update_no_hindsight": lambda: no_hindsight.guide.update(guide.clone()),
              "draw": draw}
    for fn in pieces.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(repeats):
        for name, fn in pieces.items():
            times[name].append(_timed(fn))
    med = {name: statistics.median(v) for name, v in times.items()}
    ctpg = med["control"] + (med["guide_update"] + med["draw"]) / H
    ctpg_no_hindsight = med["control"] + (med["guide_update_no_hindsight"] + med["draw"]) / H
    return {**med, "ctpg_step": ctpg, "ratio": ctpg / med["control"],
            "ratio_no_hindsight": ctpg_no_hindsight / med["control"]}


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    suites = args.get("suites", "halfcheetah-mt8,metaworld-mt10").split(",")
    backbones = args.get("backbones", "mtsac").split(",")
    repeats, threads = int(args.get("repeats", 20)), int(args.get("threads", 1))
    blocked = float(args.get("blocked", 0.5))
    spread = args.get("guide_batch", "spread") == "spread"
    torch.set_num_threads(threads)
    print(f"# CTPG step cost vs the base backbone's step: {threads} thread(s), {repeats} repeats, medians; "
          f"{blocked:.0%} of tasks blocked in the guide update (guide-block gate keeps ~half); guide batch "
          + ("128·K spread over the unblocked tasks (guide_batch=spread)" if spread else "128 per unblocked task"))
    print("| suite | backbone | control update (ms) | guide update (ms) | behaviour draw (ms) | CTPG step (ms) | "
          "ratio | ratio with hindsight=false |")
    print("|---|---|---|---|---|---|---|---|")
    for name in suites:
        for backbone in backbones:
            r = bench(name, backbone, repeats, blocked, spread)
            print(f"| {name} | {backbone} | {1e3 * r['control']:.1f} | {1e3 * r['guide_update']:.1f} | "
                  f"{1e3 * r['draw']:.1f} | {1e3 * r['ctpg_step']:.1f} | {r['ratio']:.2f}x | "
                  f"{r['ratio_no_hindsight']:.2f}x |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
