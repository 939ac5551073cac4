"""Throughput of one online KTM-DRL multi-task step: tdmt (one batched update) vs the public reference structure.

A "multi-task step" updates the student on N transitions of each of K tasks with the online losses (Eq. 3–5,
teacher term included, α=β=1) and the policy delay d=2 (the actor and the soft target update run every 2nd step).

* tdmt: one ``TeacherDistillTD3Loss`` critic update on a ``[K, N]`` batch (+ one actor update every 2nd step),
  the K teachers evaluated as one stacked module (``baddbmm``) — float32, and bf16 autocast (``precision``).
* reference: the structure of the public KTM-DRL code — K sequential per-task TD3 updates (batch N each), each
  calling its own native-size teacher critic, each with its own optimiser steps and soft update.

Both run in the same process on the same random data (sampling excluded), repeated; medians and the ratio are
printed. ``python benchmarks/ktm_step.py --threads 2`` (defaults: K=8, 2×400, N=256, obs 17, act 6).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from tensordict import TensorDict
from torch import nn
from torch.nn import functional as F

from tdmt.algos.td3_common import TD3Learner
from tdmt.envs import action_masks
from tdmt.modules.td3 import make_student_actor, make_student_critic
from tdmt.modules.teachers import StackedTeachers
from tdmt.objectives import TeacherDistillTD3Loss


# ---------------------------------------------------------------------- reference structure (plain PyTorch)
class RefActor(nn.Module):
    def __init__(self, obs: int, act: int, hidden: int):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(obs, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, act)

    def forward(self, s):
        return torch.tanh(self.l3(F.relu(self.l2(F.relu(self.l1(s))))))


class RefCritic(nn.Module):
    def __init__(self, obs: int, act: int, hidden: int):
        super().__init__()
        self.q1 = nn.Sequential(nn.Linear(obs + act, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                nn.Linear(hidden, 1))
        self.q2 = copy.deepcopy(self.q1)
        for p in self.q2.parameters():
            nn.init.normal_(p, std=0.05)

    def forward(self, s, a):
        sa = torch.cat([s, a], -1)
        return self.q1(sa), self.q2(sa)

    def Q1(self, s, a):  # noqa: N802 - the reference code's name
        return self.q1(torch.cat([s, a], -1))


class Reference:
    """K sequential per-task KTM-DRL online updates, one teacher call per task (the public code's loop)."""

    def __init__(self, K: int, obs: int, act: int, hidden: int, onehot: bool = True):
        inp = obs + (K if onehot else 0)
        self.actor, self.critic = RefActor(inp, act, hidden), RefCritic(inp, act, hidden)
        self.actor_t, self.critic_t = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        self.a_opt = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.c_opt = torch.optim.Adam(self.critic.parameters(), lr=3e-4)
        self.teachers = [RefCritic(obs, act, hidden).requires_grad_(False) for _ in range(K)]
        self.K, self.it = K, 0

    def task_update(self, k: int, s, a, r, s2, d, mask, teacher_obs):
        with torch.no_grad():
            noise = (torch.randn_like(a) * 0.2).clamp(-0.5, 0.5)
            a2 = ((self.actor_t(s2) + noise).clamp(-1, 1)) * mask
            t1, t2 = self.critic_t(s2, a2)
            y = r + 0.99 * (1 - d) * torch.min(t1, t2)
        q1, q2 = self.critic(s, a)
        loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.c_opt.zero_grad()
        loss.backward()
        self.c_opt.step()
        if self.it % 2 == 0:
            pi = self.actor(s) * mask
            loss_pi = -self.teachers[k].Q1(teacher_obs, pi).mean() - self.critic.Q1(s, pi).mean()
            self.a_opt.zero_grad()
            loss_pi.backward()
            self.a_opt.step()
            with torch.no_grad():
                for net, target in ((self.actor, self.actor_t), (self.critic, self.critic_t)):
                    for p, tp in zip(net.parameters(), target.parameters()):
                        tp.lerp_(p, 0.005)

    def step(self, batch: TensorDict, masks: torch.Tensor) -> None:
        for k in range(self.K):
            b = batch[k]
            s = torch.cat([b["observation"], b["task_onehot"]], -1)
            s2 = torch.cat([b["next", "observation"], b["next", "task_onehot"]], -1)
            self.task_update(k, s, b["action"], b["next", "reward"], s2, b["next", "terminated"].float(),
                             masks[k], b["observation"])
        self.it += 1


# ---------------------------------------------------------------------- tdmt
def make_tdmt(K: int, obs: int, act: int, hidden: int, precision: str) -> TD3Learner:
    native = [{"obs_dim": obs, "act_dim": act, **{name: [(torch.randn(i, o) * 0.05, torch.zeros(o)) for i, o in
                                                      ((obs + act if name != "actor" else obs, hidden),
                                                       (hidden, hidden), (hidden, act if name == "actor" else 1))]
                                                 for name in ("actor", "critic1", "critic2")}} for _ in range(K)]
    teachers = StackedTeachers(native, obs, act)
    actor = make_student_actor(obs, act, K, (hidden, hidden))
    critic = make_student_critic(obs, act, K, (hidden, hidden))
    loss = TeacherDistillTD3Loss(actor, critic, teachers, action_masks=torch.ones(K, act), mode="online")
    loss.make_value_estimator(gamma=0.99)
    return TD3Learner(loss, lr=3e-4, tau=0.005, policy_delay=2, precision=precision)


def make_batch(K: int, N: int, obs: int, act: int) -> TensorDict:
    task_id = torch.arange(K)[:, None].expand(K, N)
    onehot = F.one_hot(task_id, K).float()
    return TensorDict({
        "observation": torch.randn(K, N, obs), "action": torch.rand(K, N, act) * 2 - 1, "task_id": task_id,
        "task_onehot": onehot,
        "next": {"observation": torch.randn(K, N, obs), "task_id": task_id, "task_onehot": onehot,
                 "reward": torch.randn(K, N, 1), "done": torch.zeros(K, N, 1, dtype=torch.bool),
                 "terminated": torch.zeros(K, N, 1, dtype=torch.bool)},
    }, batch_size=[K, N])


def measure(fns: dict[str, object], steps: int, repeats: int) -> dict[str, list[float]]:
    """Steps/s of each ``fn(n)`` over ``repeats`` rounds; within a round the contenders run back to back, so load
    from other processes hits them alike. One warm-up block each first."""
    for fn in fns.values():
        fn(2)
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(steps)
            rates[name].append(steps / (time.perf_counter() - t0))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--batch", type=int, default=256, help="transitions per task")
    parser.add_argument("--obs", type=int, default=17)
    parser.add_argument("--act", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="multi-task steps per timing (even: d=2)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    K, N = args.tasks, args.batch
    batch = make_batch(K, N, args.obs, args.act)
    masks = action_masks([args.act] * K, args.act)
    ref = Reference(K, args.obs, args.act, args.hidden)

    def run_ref(n):
        for _ in range(n):
            ref.step(batch, masks)

    fns = {"reference (K sequential updates, K teacher calls)": run_ref}
    for precision in ("float32", "bfloat16"):
        learner = make_tdmt(K, args.obs, args.act, args.hidden, precision)

        def run_tdmt(n, learner=learner):
            for _ in range(n):
                learner.update(batch)

        fns[f"tdmt batched [K, N] update, {precision}"] = run_tdmt
    rates = measure(fns, args.steps, args.repeats)
    base = statistics.median(next(iter(rates.values())))
    print(f"KTM-DRL online multi-task step: K={K}, 2x{args.hidden}, batch {N}/task, teacher term on, "
          f"{args.threads} threads, {args.repeats} rounds x {args.steps} steps")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:52s} {median:7.2f} steps/s (median; runs {', '.join(f'{r:.2f}' for r in values)})  "
              f"x{median / base:.2f} vs reference")


if __name__ == "__main__":
    main()
