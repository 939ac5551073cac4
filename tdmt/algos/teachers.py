"""Recipe ``train_teachers``: one TD3 agent per task ("Ideal", KTM-DRL Tables 1–2), all K trained as ONE model.

Each teacher has its own stacked parameters (``[K, ...]``, :func:`tdmt.modules.td3.make_teacher_actor`), its own
replay ring (:class:`~tdmt.data.PerTaskReplayBuffer`) and its own data; one TD3 update on a ``[K, N]`` batch updates
all K (losses summed over tasks, so each teacher gets exactly its single-task gradient). The loss is
:class:`~tdmt.objectives.TeacherDistillTD3Loss` with ``alpha=0`` and no teachers — Eq. 3–5 without the teacher
term is TD3 — on the stacked networks: the same values as TorchRL's ``TD3Loss`` (tested), at a third of its
per-update overhead.
There is no ``update_schedule`` here: the K teachers share no parameter and Adam is elementwise, so the batched
update IS K independent per-task TD3 updates (same gradients, moments, policy delay and soft updates; see
``tests/test_ktm_schedule.py``) — per-task vs batched only matters for one network shared by the tasks.
TD3 (Fujimoto et al. 2018): clipped double-Q, target noise N(0, 0.2²) clipped at 0.5, policy delay 2, τ=0.005,
exploration N(0, 0.1²) after ``start_steps`` uniform random steps.

Output, per task, in ``<run_dir>/teachers/<task>/``: ``teacher.pt`` (actor + both critics at the task's native
sizes, :mod:`tdmt.modules.teachers`), ``replay/`` (the teacher's own experience D_k, native sizes, a memory-mapped
TensorDict) and ``eval.json`` (evaluation history, max average return, final return).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase

from tdmt.algos.run import TrainingRun
from tdmt.algos.td3_common import (
    EVAL_SEED,
    OnlineCollector,
    TD3Config,
    TD3Learner,
    build_learner,
    due,
    eval_row,
    log_metrics,
    write_results,
)
from tdmt.envs import Suite, get_suite, make_env
from tdmt.modules.td3 import make_teacher_actor, make_teacher_critic, stacked_layers
from tdmt.modules.teachers import native_teacher, save_teacher
from tdmt.objectives import TeacherDistillTD3Loss
from tdmt.progress import tqdm
from tdmt.tables import IDEAL

RECIPE = "train_teachers"
REPLAY_KEYS = ("observation", "action", ("next", "observation"), ("next", "reward"), ("next", "done"),
               ("next", "terminated"))


@dataclass
class Config(TD3Config):
    """TD3 teachers; defaults follow KTM-DRL §4 / TD3 (1M steps, 2×400, batch 256, lr 3e-4)."""

    total_steps: int = 1_000_000  # env steps per task
    start_steps: int = 25_000  # env steps of uniform random actions before the first update (TD3)


def teachers_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "teachers"


def save_teachers(loss: TeacherDistillTD3Loss, collector: OnlineCollector, suite: Suite, out: Path,
                  history: dict[str, list[float]]) -> None:
    """Write each task's native-size teacher, its replay data D_k and its evaluation history."""
    with loss.actor_network_params.to_module(loss.actor_network):
        actor = stacked_layers(loss.actor_network)
    critics = []
    for j in range(2):
        with loss.qvalue_network_params[j].to_module(loss.qvalue_network):
            critics.append(stacked_layers(loss.qvalue_network))
    for k, task in enumerate(suite.tasks):
        per_task = [[(w[k], b[k, 0]) for w, b in layers] for layers in (actor, *critics)]
        teacher = native_teacher(*per_task, suite.obs_dims[k], suite.act_dims[k], suite.obs_max, suite.act_max)
        folder = out / task.name
        save_teacher(teacher, folder)
        save_replay(collector.buffer.task_data(k), suite.obs_dims[k], suite.act_dims[k], folder / "replay")
        returns = history[task.name]
        (folder / "eval.json").write_text(json.dumps(
            {"task": task.name, "returns": returns, "max_average_return": max(returns),
             "final_return": returns[-1]}, indent=2))


def save_replay(data: TensorDictBase, obs_dim: int, act_dim: int, path: Path) -> None:
    """Store a teacher's transitions at native sizes as a memory-mapped TensorDict (on the host, whatever device
    the replay lives on)."""
    data = data.select(*REPLAY_KEYS).to("cpu").clone()
    data.set("observation", data.get("observation")[..., :obs_dim])
    data.set(("next", "observation"), data.get(("next", "observation"))[..., :obs_dim])
    data.set("action", data.get("action")[..., :act_dim])
    data.memmap(path, existsok=True)


def load_replay(path: str | os.PathLike, task_id: int, num_tasks: int, obs_max: int, act_max: int) -> TensorDict:
    """A teacher's D_k padded to ``obs_max``/``act_max`` and labelled with ``task_id`` (and its one-hot)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no teacher replay data at {path} (train teachers with recipes/train_teachers.py)")
    data = TensorDict.load_memmap(path).clone()
    n = data.shape[0]
    pad = torch.nn.functional.pad
    for key, width in (("observation", obs_max), (("next", "observation"), obs_max), ("action", act_max)):
        value = data.get(key)
        data.set(key, pad(value, (0, width - value.shape[-1])))
    onehot = torch.nn.functional.one_hot(torch.full((n,), task_id), num_tasks).float()
    for prefix in ((), ("next",)):
        data.set((*prefix, "task_id"), torch.full((n,), task_id, dtype=torch.long))
        data.set((*prefix, "task_onehot"), onehot)
    return data


def build_teachers(cfg: Config, suite: Suite, masks: torch.Tensor) -> TD3Learner:
    """The K teachers as one stacked TD3 model (``[K, ...]`` parameters; TD3 = Eq. 3–5 with ``alpha=0``), its
    optimisers and targets, on the training device."""
    K = suite.num_tasks
    actor = make_teacher_actor(K, suite.obs_max, suite.act_max, cfg.hidden)
    critic = make_teacher_critic(K, suite.obs_max, suite.act_max, masks, cfg.hidden)
    loss = TeacherDistillTD3Loss(actor, critic, None, action_masks=masks, mode="online", alpha=0.0,
                                 policy_noise=cfg.policy_noise, noise_clip=cfg.noise_clip, reduction="none")
    return build_learner(loss, cfg, reduce=sum_over_tasks)


def run(cfg: Config) -> dict:
    """Train the K teachers of ``cfg.suite`` as one batched TD3 model; returns the summary."""
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = cfg.resolved_run_dir()
    suite = get_suite(cfg.suite)
    env = make_env(cfg.suite, seed=cfg.seed, device=cfg.device)  # envs step on the host, hand over on the device
    eval_env = make_env(cfg.suite, seed=EVAL_SEED + cfg.seed, num_envs_per_task=cfg.eval_episodes, device=cfg.device)
    learner = build_teachers(cfg, suite, env.action_masks)
    loss, actor = learner.loss, learner.loss.actor_network
    collector = OnlineCollector(env, cfg.buffer_size_per_task, cfg.batch_size_per_task, **cfg.replay_options(run_dir))
    trun = TrainingRun(run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    buffers = {"replay": collector.buffer}
    get_state = learner.state_dict
    step = trun.resume(learner.load_state_dict, buffers)
    with trun.guard(get_state, buffers) as guard:
        start = step
        for step in tqdm(range(start, cfg.total_steps), initial=start, total=cfg.total_steps, desc="teachers",
                         disable=not cfg.progress):
            collector.step(actor, cfg.expl_noise, random=step < cfg.start_steps)
            if step >= cfg.start_steps:
                learner.update(collector.sample())
            done = step + 1
            if due(done, cfg.log_every):
                log_metrics(trun, done, learner, collector, suite)
            if due(done, cfg.eval_every) or done == cfg.total_steps:
                trun.evals.log(done, **eval_row(eval_env, actor, "teachers", EVAL_SEED + cfg.seed))
            trun.maybe_checkpoint(done, get_state, buffers)
            guard.check(done)
    rows = trun.evals.rows()
    history = {name: [float(r[f"eval/{name}/return"]) for r in rows] for name in suite.task_names}
    out = teachers_dir(run_dir)
    save_teachers(loss, collector, suite, out, history)
    summary = write_results(trun, f"TD3 teachers (Ideal) — {cfg.suite}, seed {cfg.seed}", suite,
                            {IDEAL: rows}, None, "teachers",
                            extra=f"\nTeachers saved in `{out}`.\n")
    summary.update(teachers_dir=str(out), total_steps=cfg.total_steps)
    trun.finish(summary)
    env.close()
    eval_env.close()
    return summary


def sum_over_tasks(loss: torch.Tensor) -> torch.Tensor:
    """``[K, N]`` per-sample losses → mean over N, SUM over tasks: each teacher gets its single-task gradient."""
    return loss.mean(-1).sum()
