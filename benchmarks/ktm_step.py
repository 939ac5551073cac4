"""Speed of KTM-DRL's epochs: tdmt's per-task schedule vs the public code's loop, and tdmt's batched option.

One epoch (Algorithm 1's ``decision epoch``) updates the student on N transitions of each of K tasks:

* offline (Eq. 1–2): critic regressed on teacher k's Q-values, actor through teacher k's critic, every update;
* online (Eq. 3–5, α=β=1): clipped double-Q TD target and critic, actor + soft target update every d=2 epochs.

Contenders, run in the same process on the same data (sampling excluded), round after round so that load from other
processes hits them alike; medians over rounds and the ratios are printed:

* ``reference``: the public code's loop (xuzhiyuan1528/KTM-DRL, ``agent/td3mt.py::train_mt``) in plain PyTorch —
  foreach task k one update on N transitions: its native-size teacher critic, ``F.mse_loss``, its own optimiser
  steps (separate offline/online Adams, per-task update counters for the policy delay), the soft update as a loop
  over parameters (also offline, as there). Student input: the padded state.
* ``tdmt per_task`` (the default): ``TD3Learner(schedule="per_task")`` — the same K sequential updates through
  :class:`~tdmt.objectives.TeacherDistillTD3Loss`.
* ``tdmt batched`` (option): ``TD3Learner(schedule="batched")`` — one update on the mean of the ``[K, N]`` batch
  (K× fewer gradient steps: a different method, shown for its cost).

``python benchmarks/ktm_step.py --threads 1 --repeats 3`` (defaults: K=8, 2×400, N=256, obs 17, act 6: MT8).

On a GPU: ``--device cuda``; ``--precision float32 bfloat16`` times tdmt's learners in each precision, ``--compile`` /
``--cudagraphs`` add those variants of them to eager (the reference loop stays eager float32: the public code);
``--json PATH`` writes the medians as ``{"rows": [{"variant", "per_s" (updates/s), "unit", ...}]}`` (one update:
N transitions of one task for the reference and ``per_task``, the whole ``[K, N]`` batch for ``batched``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch._dynamo
from speed_options import add_speed_arguments, speed_variants  # benchmarks/speed_options.py
from tensordict import TensorDict
from torch import nn
from torch.nn import functional as F

from tdmt.algos.td3_common import TD3Learner
from tdmt.modules.td3 import make_student_actor, make_student_critic
from tdmt.modules.teachers import StackedTeachers
from tdmt.objectives import TeacherDistillTD3Loss


# ---------------------------------------------------------------------- the public code's structure (plain PyTorch)
class RefActor(nn.Module):
    def __init__(self, obs: int, act: int, hidden: int):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(obs, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, act)

    def forward(self, s):
        return torch.tanh(self.l3(F.relu(self.l2(F.relu(self.l1(s))))))


class RefCritic(nn.Module):
    def __init__(self, obs: int, act: int, hidden: int):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(obs + act, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)
        self.l4, self.l5, self.l6 = nn.Linear(obs + act, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)

    def forward(self, s, a):
        sa = torch.cat([s, a], 1)
        return (self.l3(F.relu(self.l2(F.relu(self.l1(sa))))), self.l6(F.relu(self.l5(F.relu(self.l4(sa))))))

    def Q1(self, s, a):  # noqa: N802 - the public code's name
        sa = torch.cat([s, a], 1)
        return self.l3(F.relu(self.l2(F.relu(self.l1(sa)))))


class Reference:
    """``TD3MT.train_mt`` of the public code, one call per task and epoch (its Gaussian-noise fix aside)."""

    def __init__(self, K: int, obs: int, act: int, hidden: int, device: torch.device | str = "cpu"):
        self.actor, self.critic = RefActor(obs, act, hidden).to(device), RefCritic(obs, act, hidden).to(device)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=3e-4)
        self.actor_optimizer_online = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_optimizer_online = torch.optim.Adam(self.critic.parameters(), lr=3e-4)
        self.teachers = [RefCritic(obs, act, hidden).to(device) for _ in range(K)]  # loaded TD3 agents there
        self.total_it = [0] * K

    def update_target_network(self) -> None:
        for net, target in ((self.critic, self.critic_target), (self.actor, self.actor_target)):
            for param, target_param in zip(net.parameters(), target.parameters()):
                target_param.data.copy_(0.005 * param.data + (1 - 0.005) * target_param.data)

    def train_mt(self, idx: int, batch: tuple, is_offline: bool) -> None:
        self.total_it[idx] += 1
        state, action, next_state, reward, not_done = batch
        teacher = self.teachers[idx]
        with torch.no_grad():
            if is_offline:
                teacher_q1, teacher_q2 = teacher(state, action)
            else:
                noise = (torch.randn_like(action) * 0.2).clamp(-0.5, 0.5)
                next_action = (self.actor_target(next_state) + noise).clamp(-1, 1)
                target_q1, target_q2 = self.critic_target(next_state, next_action)
                target_q = reward + not_done * 0.99 * torch.min(target_q1, target_q2)
        current_q1, current_q2 = self.critic(state, action)
        if is_offline:
            critic_loss = F.mse_loss(current_q1, teacher_q1) + F.mse_loss(current_q2, teacher_q2)
            optimizer = self.critic_optimizer
        else:
            critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
            optimizer = self.critic_optimizer_online
        optimizer.zero_grad()
        critic_loss.backward()
        optimizer.step()
        if is_offline or self.total_it[idx] % 2 == 0:
            current_action = self.actor(state)
            actor_loss = -teacher.Q1(state, current_action)
            if is_offline:
                actor_loss, optimizer = actor_loss.mean(), self.actor_optimizer
            else:
                actor_loss = (-self.critic.Q1(state, current_action) + actor_loss).mean()
                optimizer = self.actor_optimizer_online
            optimizer.zero_grad()
            actor_loss.backward()
            optimizer.step()
            self.update_target_network()


# ---------------------------------------------------------------------- tdmt
def make_learner(K: int, obs: int, act: int, hidden: int, schedule: str, device: torch.device | str = "cpu",
                 precision: str = "float32", speed: str = "eager") -> TD3Learner:
    native = [{"obs_dim": obs, "act_dim": act, **{name: [(torch.randn(i, o) * 0.05, torch.zeros(o)) for i, o in
                                                      ((obs + act if name != "actor" else obs, hidden),
                                                       (hidden, hidden), (hidden, act if name == "actor" else 1))]
                                                 for name in ("actor", "critic1", "critic2")}} for _ in range(K)]
    teachers = StackedTeachers(native, obs, act)
    actor = make_student_actor(obs, act, K, (hidden, hidden))
    critic = make_student_critic(obs, act, K, (hidden, hidden))
    loss = TeacherDistillTD3Loss(actor, critic, teachers, action_masks=torch.ones(K, act), mode="online")
    loss.make_value_estimator(gamma=0.99)
    loss.to(device)
    return TD3Learner(loss, lr=3e-4, tau=0.005, policy_delay=2, schedule=schedule, precision=precision,
                      compile="compile" in speed, cudagraphs="cudagraphs" in speed)


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


def measure(fns: dict[str, Callable[[int], None]], epochs: int, repeats: int, warmup: dict[str, int],
            sync: Callable[[], None]) -> dict[str, list[float]]:
    """Epochs/s of each ``fn(n)`` over ``repeats`` rounds, contenders back to back in each round; warm-up epochs
    first (``compile`` / ``cudagraphs``: enough for every branch to be compiled or captured)."""
    for name, fn in fns.items():
        fn(warmup[name])
    sync()
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(epochs)
            sync()
            rates[name].append(epochs / (time.perf_counter() - t0))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--batch", type=int, default=256, help="transitions per task")
    parser.add_argument("--obs", type=int, default=17)
    parser.add_argument("--act", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per timing (even: d=2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", nargs="+", default=["offline", "online"], choices=["offline", "online"])
    add_speed_arguments(parser)
    args = parser.parse_args()
    device, speeds = speed_variants(parser, args)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if args.compile:  # one process holds 2 learners x precisions x 2 optimisers, each a guard of the compiled step
        torch._dynamo.config.recompile_limit = 64
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    K, N = args.tasks, args.batch
    batch = make_batch(K, N, args.obs, args.act).to(device)
    per_task_rows = [(b["observation"], b["action"], b["next", "observation"], b["next", "reward"],
                      1.0 - b["next", "terminated"].float()) for b in batch.unbind(0)]
    print(f"KTM-DRL epochs: K={K}, 2x{args.hidden}, N={N} per task, obs {args.obs}, act {args.act}, "
          f"{args.threads} thread(s), {args.repeats} rounds x {args.epochs} epochs, torch {torch.__version__}, "
          f"device {device}")
    rows = []
    for stage in args.stages:
        ref = Reference(K, args.obs, args.act, args.hidden, device)
        variants = {(s, p, v): make_learner(K, args.obs, args.act, args.hidden, s, device, p, v)
                    for p in args.precision for v in speeds for s in ("per_task", "batched")}
        for learner in variants.values():
            learner.loss.mode = stage
        every = {"actor_every": 1, "soft_update": False} if stage == "offline" else {}

        def run_ref(n, ref=ref, stage=stage):
            for _ in range(n):
                for k in range(K):
                    ref.train_mt(k, per_task_rows[k], is_offline=stage == "offline")

        def run_tdmt(n, learner=None, every=every):
            for _ in range(n):
                learner.update(batch, **every)

        fns = {"reference": run_ref}
        fns.update({" ".join(key): (lambda n, lr=lr: run_tdmt(n, lr)) for key, lr in variants.items()})
        warmup = {name: 2 if name == "reference" or name.endswith("eager") else 8 for name in fns}
        rates = {name: statistics.median(v) for name, v in measure(fns, args.epochs, args.repeats, warmup,
                                                                   sync).items()}
        ref_rate = rates["reference"]
        print(f"{stage} (Eq. {'1-2' if stage == 'offline' else '3-5'}), epochs/s (median):")
        for p in args.precision:
            for v in speeds:
                per_task, batched = rates[f"per_task {p} {v}"], rates[f"batched {p} {v}"]
                label = "" if (p, v) == ("float32", "eager") else f" [{p}, {v}]"
                print(f"  reference {ref_rate:7.2f}   tdmt per_task{label} {per_task:7.2f}   tdmt batched{label} "
                      f"{batched:7.2f}")
                print(f"  per_task / reference = x{per_task / ref_rate:.2f}   batched / per_task = "
                      f"x{batched / per_task:.2f}   (updates per epoch: reference {K}, per_task {K}, batched 1)")
        common = {"stage": stage, "device": str(device), "tasks": K, "hidden": args.hidden, "batch": N,
                  "unit": "updates/s"}
        rows.append({"variant": f"{stage} reference", "precision": "float32", "speed": "eager",
                     "per_s": ref_rate * K, "epochs_per_s": ref_rate, "updates_per_epoch": K, **common})
        for (schedule, p, v) in variants:
            per_epoch = K if schedule == "per_task" else 1
            rate = rates[f"{schedule} {p} {v}"]
            rows.append({"variant": f"{stage} tdmt {schedule} {p} {v}", "precision": p, "speed": v,
                         "schedule": schedule, "per_s": rate * per_epoch, "epochs_per_s": rate,
                         "updates_per_epoch": per_epoch, **common})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
