"""Rates of the Arora et al. updates at the paper's sizes (halfcheetah-arora6: K=6 tasks, 16 envs per task, t_max=5,
2×64 actor, 3-layer critic, 2×64 student): one A2C head update (the ``cycle`` schedule: task k's rollout updates
head k) and one KL-distillation head update, per speed variant, each as a ratio to the plain eager float32 update
measured in the same run (median of ``--repeats``; random rollouts, no env).

    python benchmarks/a2c_update.py [--device cpu] [--precision float32 bfloat16] [--compile] [--cudagraphs]
                                    [--repeats 7] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from speed_options import add_speed_arguments, speed_variants  # benchmarks/speed_options.py
from tensordict import TensorDict
from torchrl.data import Bounded

from tdmt.algos import a2c_multitask, distill_kl
from tdmt.algos.a2c_multitask import make_agent
from tdmt.algos.distill_kl import KLStudentLearner, make_student, make_teacher_actor
from tdmt.envs import get_suite

REFERENCE = "eager float32"


class _SpecOnly:
    """What the recipes' network builders read from an env (its suite and action spec), without starting MuJoCo."""

    def __init__(self, suite_name: str, envs: int, device: str):
        self.suite = get_suite(suite_name)
        self.action_spec = Bounded(-1.0, 1.0, (self.suite.num_tasks, envs, self.suite.act_max), device=device)


def rollout(suite_name: str, envs: int, t_max: int, device: str) -> TensorDict:
    """A random ``[K, E, T]`` rollout with the keys the A2C and KL updates read."""
    suite = get_suite(suite_name)
    K, shape = suite.num_tasks, (suite.num_tasks, envs, t_max)
    tid = torch.arange(K, device=device).view(K, 1, 1).expand(shape)
    flags = torch.zeros(*shape, 1, dtype=torch.bool, device=device)
    flags[:, :, 2] = True  # one truncation per row: the bootstrapped branch of the n-step return is exercised
    mask = torch.ones(*shape, suite.act_max, device=device)
    return TensorDict({
        "observation": torch.randn(*shape, suite.obs_max, device=device), "task_id": tid,
        "action": torch.randn(*shape, suite.act_max, device=device), "action_dim_mask": mask,
        ("teacher", "loc"): torch.randn(*shape, suite.act_max, device=device),
        ("teacher", "scale"): torch.rand(*shape, suite.act_max, device=device) + 0.5,
        "next": {"observation": torch.randn(*shape, suite.obs_max, device=device), "task_id": tid,
                 "reward": torch.randn(*shape, 1, device=device), "done": flags, "terminated": torch.zeros_like(flags)},
    }, list(shape), device=device)


def a2c_step(args: argparse.Namespace, **options) -> Callable[[], int]:
    cfg = a2c_multitask.Config(suite=args.suite, num_envs_per_task=args.envs, device=args.device, **options)
    agent = make_agent(cfg, _SpecOnly(args.suite, args.envs, args.device))
    batch = rollout(args.suite, args.envs, cfg.t_max, args.device)

    def step() -> int:
        for k in range(agent.num_tasks):
            agent.update(batch[k], task=k)
        return agent.num_tasks
    return step


def kl_step(args: argparse.Namespace, **options) -> Callable[[], int]:
    cfg = distill_kl.Config(suite=args.suite, num_envs_per_task=args.envs, device=args.device, **options)
    env = _SpecOnly(args.suite, args.envs, args.device)
    teacher = make_teacher_actor(cfg, env).requires_grad_(False)
    learner = KLStudentLearner(cfg, make_student(cfg, env), teacher, env.suite.act_dims, env.suite.act_max)
    batch = rollout(args.suite, args.envs, cfg.t_max, args.device)
    tasks = env.suite.num_tasks

    def step() -> int:
        for k in range(tasks):
            learner.update(batch[k], k)
        return tasks
    return step


def rate(step: Callable[[], int], repeats: int, iterations: int, device: str) -> float:
    """Median updates per second over ``repeats`` timings of ``iterations`` calls (after warm-up calls that also
    compile or capture)."""
    for _ in range(4):
        step()
    rates = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start, updates = time.perf_counter(), 0
        for _ in range(iterations):
            updates += step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rates.append(updates / (time.perf_counter() - start))
    return statistics.median(rates)


def variants(args: argparse.Namespace) -> list[tuple[str, dict]]:
    out = [(REFERENCE, {})]
    out += [(f"eager {p}", {"precision": p}) for p in args.precision if p != "float32"]
    speeds = ([("compile", {"compile": True})] if args.compile else []) + (
        [("cudagraphs", {"cudagraphs": True}), ("compile+cudagraphs", {"compile": True, "cudagraphs": True})]
        if args.cudagraphs else [])
    out += [(f"{name} {p}", {**opts, "precision": p}) for name, opts in speeds for p in args.precision]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_speed_arguments(parser)
    parser.add_argument("--suite", default="halfcheetah-arora6")
    parser.add_argument("--envs", type=int, default=16, help="envs per task (paper: 16)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=5, help="rollouts (K head updates each) per timing")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    speed_variants(parser, args)  # validates --device and --cudagraphs; variants() builds this benchmark's list
    torch.set_num_threads(args.threads)
    print(f"{args.suite}, {args.envs} envs per task, device {args.device}, {args.threads} thread(s); "
          f"median of {args.repeats}; ratio vs {REFERENCE}")
    rows = []
    for learner, build in (("a2c", a2c_step), ("kl", kl_step)):
        reference = None
        for name, options in variants(args):
            torch.manual_seed(0)
            per_s = rate(build(args, **options), args.repeats, args.iterations, args.device)
            reference = reference or per_s
            rows.append({"variant": f"{learner} {name}", "per_s": per_s, "unit": "updates/s",
                         "ratio": per_s / reference, "reference": f"{learner} {REFERENCE}", "device": args.device})
            print(f"{learner:3s} {name:28s} {per_s:9.1f} updates/s  {per_s / reference:5.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
