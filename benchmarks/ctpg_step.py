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

The guide batch is the trainer's fixed ``[K, 128]`` shape whatever the guide-block gate blocks (no host read, one
shape for a CUDA graph; rows of blocked tasks weigh nothing), so its relabel costs as with no task blocked, for
``guide_batch=spread`` (the default, the public code: 128·K spread over the unblocked tasks) and ``per_task`` alike.
Measured on the 2-core box under load before that change, MTSAC halfcheetah-mt8: 1.59× with ``spread`` (then 1.27×
with ``per_task``, which drew 128 per unblocked task only), metaworld-mt10 ``spread``: 1.67×. Data is synthetic
(random states/actions in the replays): costs do not depend on values.

On a CUDA device the behaviour draw runs at every env step (masked: no host read, DESIGN §9), so there the ratio
counts it once per step instead of once per H.

    python benchmarks/ctpg_step.py                      # MTSAC on halfcheetah-mt8 and metaworld-mt10, 1 thread
    python benchmarks/ctpg_step.py --suites metaworld-mt10 --backbones mtsac mhsac --repeats 30 --blocked 0.5
    python benchmarks/ctpg_step.py --device cuda --precision float32 bfloat16 --compile --cudagraphs --json out.json

``--json PATH`` writes the medians as ``{"rows": [{"variant": "<suite> <backbone> <piece> <speed> <precision>",
"per_s", "unit": "updates/s", ...}]}`` with pieces ``control`` (control updates/s), ``guide_update`` and ``ctpg``
(CTPG steps/s: one control update plus its share of guide update and draws).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
from speed_options import add_speed_arguments, speed_variants  # benchmarks/speed_options.py
from tensordict import TensorDict

from tdmt.algos.ctpg import Config, CTPGAgent, guide_batch
from tdmt.data import PerTaskReplayBuffer
from tdmt.envs import action_masks, get_suite
from tdmt.modules import BACKBONES


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


def _timed(fn, sync) -> float:
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def bench(suite_name: str, backbone: str, repeats: int, blocked_fraction: float, spread: bool = True,
          device: torch.device | str = "cpu", precision: str = "float32", speed: str = "eager"
          ) -> dict[str, float]:
    suite, device = get_suite(suite_name), torch.device(device)
    cfg = Config(suite=suite_name, backbone=backbone, guide="ctpg", run_dir="/tmp/unused", device=str(device),
                 precision=precision, compile="compile" in speed, cudagraphs="cudagraphs" in speed,
                 guide_batch="spread" if spread else "per_task")
    torch.manual_seed(0)
    agent = CTPGAgent(cfg, suite)
    no_hindsight = CTPGAgent(dataclasses.replace(cfg, hindsight=False), suite)
    K, H, N = suite.num_tasks, cfg.guide_step, cfg.batch_size_per_task
    blocked = torch.zeros(K, dtype=torch.bool, device=device)
    blocked[: int(round(blocked_fraction * K))] = True
    control, guide_rows = (td.to(device) for td in _replays(agent, N, H))
    replay = PerTaskReplayBuffer(K, N, N, device=device)
    replay.extend(guide_rows)
    guide = guide_batch(replay, blocked, spread)  # the trainer's [K, N] batch, blocked tasks weighing nothing
    obs = torch.randn(K, suite.obs_max, device=device)
    own = torch.arange(K, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def draw() -> None:
        agent.guide.choose(obs, own, agent.blocked() & blocked, filter_on=True)

    pieces = {"control": lambda: agent.sac.update(control.clone(), env_steps=1),
              "guide_update": lambda: agent.guide.update(guide.clone()),
              "guide_update_no_hindsight": lambda: no_hindsight.guide.update(guide.clone()),
              "draw": draw}
    for fn in pieces.values():  # warm-up (compile/capture happen here)
        for _ in range(1 if speed == "eager" else 4):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(repeats):
        for name, fn in pieces.items():
            times[name].append(_timed(fn, sync))
    med = {name: statistics.median(v) for name, v in times.items()}
    draws = 1 / H if agent.behaviour.skip_idle_draws else 1.0  # per env step: CPU at block starts, CUDA every step
    ctpg = med["control"] + med["guide_update"] / H + med["draw"] * draws
    ctpg_no_hindsight = med["control"] + med["guide_update_no_hindsight"] / H + med["draw"] * draws
    return {**med, "ctpg_step": ctpg, "ratio": ctpg / med["control"],
            "ratio_no_hindsight": ctpg_no_hindsight / med["control"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", default=["halfcheetah-mt8", "metaworld-mt10"])
    parser.add_argument("--backbones", nargs="+", default=["mtsac"], choices=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocked", type=float, default=0.5, help="share of tasks blocked in the guide update")
    parser.add_argument("--guide-batch", default="spread", choices=["spread", "per_task"])
    add_speed_arguments(parser)
    args = parser.parse_args()
    device, speeds = speed_variants(parser, args)
    spread = args.guide_batch == "spread"
    torch.set_num_threads(args.threads)
    print(f"# CTPG step cost vs the base backbone's step: {args.threads} thread(s), {args.repeats} repeats, medians, "
          f"device {device}; {args.blocked:.0%} of tasks blocked in the guide update (guide-block gate keeps ~half); "
          "guide batch " + ("128·K spread over the unblocked tasks (guide_batch=spread)" if spread else
                            "128 per task, blocked ones weighing nothing (guide_batch=per_task)"))
    print("| suite | backbone | speed | precision | control update (ms) | guide update (ms) | behaviour draw (ms) | "
          "CTPG step (ms) | ratio | ratio with hindsight=false |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.suites:
        for backbone in args.backbones:
            for precision in args.precision:
                for speed in speeds:
                    r = bench(name, backbone, args.repeats, args.blocked, spread, device, precision, speed)
                    print(f"| {name} | {backbone} | {speed} | {precision} | {1e3 * r['control']:.1f} | "
                          f"{1e3 * r['guide_update']:.1f} | {1e3 * r['draw']:.1f} | {1e3 * r['ctpg_step']:.1f} | "
                          f"{r['ratio']:.2f}x | {r['ratio_no_hindsight']:.2f}x |", flush=True)
                    common = {"unit": "updates/s", "suite": name, "backbone": backbone, "precision": precision,
                              "speed": speed, "device": str(device)}
                    rows += [{"variant": f"{name} {backbone} {piece} {speed} {precision}", "per_s": 1.0 / r[key],
                              "ms": 1e3 * r[key], **common}
                             for piece, key in (("control", "control"), ("guide_update", "guide_update"),
                                                ("ctpg", "ctpg_step"))]
                    rows[-1].update(ratio=r["ratio"], ratio_no_hindsight=r["ratio_no_hindsight"])
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
