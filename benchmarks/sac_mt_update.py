"""Cost of one multi-task SAC update (critics + actor + temperatures + soft target update) per backbone, at the
paper's sizes (CTPG App. F.3: batch 128·K, 2×400 HalfCheetah / 5×400 Meta-World), relative to MTSAC in the same
run (median of repeats, random ``[K, 128]`` batches, no env).

    python benchmarks/sac_mt_update.py [--suites halfcheetah-mt5 metaworld-mt10] [--repeats 5] [--threads 1]

On a GPU: ``--device cuda``; ``--precision float32 bfloat16`` times each precision, ``--compile`` / ``--cudagraphs``
add those variants to eager (the ratio column stays against eager float32 MTSAC); ``--json PATH`` writes the medians
as ``{"rows": [{"variant": "<suite> <backbone> <speed> <precision>", "per_s" (updates/s), "unit", ...}]}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from speed_options import add_speed_arguments, speed_variants  # benchmarks/speed_options.py
from tensordict import TensorDict

from tdmt.algos.sac_mt import Config, MultiTaskSAC
from tdmt.envs import action_masks, get_suite
from tdmt.modules import BACKBONES


def random_batch(suite, n: int, device: torch.device | str = "cpu") -> TensorDict:
    K, tid = suite.num_tasks, torch.arange(suite.num_tasks)[:, None].expand(suite.num_tasks, n)
    mask = action_masks(suite.act_dims, suite.act_max)[tid]
    flags = torch.zeros(K, n, 1, dtype=torch.bool)
    return TensorDict({
        "observation": torch.randn(K, n, suite.obs_max), "task_id": tid,
        "action": (torch.rand(K, n, suite.act_max) * 2 - 1) * mask,
        "next": {"observation": torch.randn(K, n, suite.obs_max), "task_id": tid, "reward": torch.randn(K, n, 1),
                 "done": flags, "terminated": flags.clone()}}, [K, n]).to(device)


def update_seconds(suite_name: str, backbone: str, repeats: int, device: torch.device, precision: str = "float32",
                   speed: str = "eager") -> float:
    """Median seconds of one update (after warm-up: 1 eager call, 4 with ``compile``/``cudagraphs``)."""
    cfg = Config(suite=suite_name, backbone=backbone, device=str(device), precision=precision,
                 compile="compile" in speed, cudagraphs="cudagraphs" in speed)
    suite = get_suite(suite_name)
    sac = MultiTaskSAC(cfg, suite)
    batch = random_batch(suite, cfg.batch_size_per_task, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(1 if speed == "eager" else 4):  # warm-up (compile/capture happen here)
        sac.update(batch.clone(), env_steps=0)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sac.update(batch.clone(), env_steps=0)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", nargs="+", default=["halfcheetah-mt5", "metaworld-mt10"])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    add_speed_arguments(parser)
    args = parser.parse_args()
    device, speeds = speed_variants(parser, args)
    torch.set_num_threads(args.threads)
    print(f"one SAC update, median of {args.repeats}, {args.threads} thread(s), device {device}, torch "
          f"{torch.__version__}; ratio vs eager float32 {args.backbones[0]}")
    rows = []
    for suite_name in args.suites:
        reference = None
        for backbone in args.backbones:
            for precision in args.precision:
                for speed in speeds:
                    seconds = update_seconds(suite_name, backbone, args.repeats, device, precision, speed)
                    reference = reference or seconds
                    print(f"{suite_name:16s} {backbone:7s} {speed:18s} {precision:8s} {seconds * 1e3:8.1f} ms/update"
                          f"  {seconds / reference:5.2f}x", flush=True)
                    rows.append({"variant": f"{suite_name} {backbone} {speed} {precision}", "per_s": 1.0 / seconds,
                                 "unit": "updates/s", "suite": suite_name, "backbone": backbone,
                                 "precision": precision, "speed": speed, "ms": seconds * 1e3,
                                 "ratio_to_first": seconds / reference, "device": str(device)})
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
