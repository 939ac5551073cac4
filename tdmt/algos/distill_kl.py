"""Multi-task policy distillation with a KL-Gaussian loss (Arora et al. §3.1.3, §3.1.4, §4.3.2; DESIGN §5).

1. Teachers: one Gaussian policy per task, trained alone (K independent networks trained as one batched model):
   ``teacher_algo="a2c"`` (the paper: single-task A2C, 3M frames each; the ``a2c_multitask`` recipe with
   ``architecture="independent"``) or ``"sac"`` (a TanhNormal SAC actor, much faster to train on small tasks).
   ``teacher_path`` reuses the ``model.pt`` of an earlier teacher run instead.
2. Student: an actor only, shared hidden layers (2×64) and one head per task. Each iteration collects a ``t_max``
   rollout of E envs per task, acted by the student with probability ``p_student`` (drawn per task and rollout)
   else by the teacher; the teacher's Gaussian (μ_T, σ_T) is stored with every state (the paper's targets Y), and
   head k is updated on task k's rollout with ``KL(T_k ‖ S_k)`` (``direction="forward"``; ``"reverse"``: KL(S‖T)),
   tasks cycled as in vanilla multi-task (``update="cycle"``) or all at once (``"joint"``).
3. Evaluation of each head over ``eval_episodes`` episodes, next to the teachers (Table 2's Scratch column when
   the teachers are A2C) and a uniform random policy; ``results.md`` also gives the normalised score
   ``(R_student − R_random) / (R_teacher − R_random)`` per task.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.objectives import SACLoss, SoftUpdate, ValueEstimators

from tdmt.algos import a2c_multitask
from tdmt.algos.a2c_multitask import (
    MODEL_FILE,
    Rollouts,
    crossed,
    default_run_dir,
    eval_row,
    format_cell,
    frames_text,
    step_keeping_other_rows,
    table2,
    write_report,
)
from tdmt.algos.run import SUMMARY, TrainingRun
from tdmt.data import PerTaskReplayBuffer
from tdmt.envs import MultiTaskEnv, action_masks, get_suite, make_env
from tdmt.eval import EvalResult, evaluate
from tdmt.modules.multihead import MultiHeadMLP, actor_net, make_gaussian_actor
from tdmt.objectives import KLGaussianDistillLoss
from tdmt.progress import tqdm
from tdmt.report import markdown_table


@dataclass
class Config:
    """Distillation of K per-task teachers into one multi-head student (paper defaults)."""

    suite: str = "halfcheetah-arora6"
    seed: int = 0
    run_dir: str = ""
    # teachers
    teacher_algo: Literal["a2c", "sac"] = "a2c"
    teacher_path: str = ""  # a teachers' model.pt to reuse (built with the same teacher_algo); empty: train them
    teacher_frames_per_task: int = 3_000_000
    teacher_envs_per_task: int = 16  # A2C teachers; SAC teachers step one env per task
    sac_hidden: tuple[int, ...] = (256, 256)
    sac_lr: float = 3e-4
    sac_batch_per_task: int = 256
    sac_random_frames: int = 1000  # per task, uniform random actions before the actor acts
    sac_buffer_per_task: int = 1_000_000
    # student
    frames_per_task: int = 1_000_000
    num_envs_per_task: int = 16
    t_max: int = 5
    p_student: float = 1.0  # paper §3.1.4: multi-task rollouts are drawn from the student
    epochs: int = 1  # gradient steps on each rollout (the paper: 1)
    direction: Literal["forward", "reverse"] = "forward"
    update: Literal["cycle", "joint"] = "cycle"
    lr: float = 7e-4
    lr_schedule: Literal["constant", "linear"] = "constant"  # linear: decays to 0 at frames_per_task
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 1e-5
    max_grad_norm: float = 0.5
    student_hidden: tuple[int, ...] = (64, 64)
    # evaluation, logs, checkpoints (frames per task)
    eval_every: int = 100_000
    eval_episodes: int = 20
    log_every: int = 10_000
    checkpoint_every: int = 100_000
    threads: int = 1

    def validate(self) -> None:
        if not 0.0 <= self.p_student <= 1.0:
            raise ValueError(f"p_student must be in [0, 1], got {self.p_student}")
        for name in ("frames_per_task", "teacher_frames_per_task", "num_envs_per_task", "teacher_envs_per_task",
                     "t_max", "epochs", "eval_episodes", "sac_batch_per_task", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def teacher_label(self) -> str:
        return "Scratch" if self.teacher_algo == "a2c" else "Teachers (SAC)"


# ----------------------------------------------------------------------------------------------------- teachers
def make_teacher_actor(cfg: Config, env: MultiTaskEnv):
    """K independent Gaussian actors (no shared layer): A2C's 2×64 tanh, or SAC's ``sac_hidden`` ReLU."""
    s = env.suite
    if cfg.teacher_algo == "a2c":
        return make_gaussian_actor(s.num_tasks, s.obs_max, s.act_max, (64, 64), shared_trunk=False,
                                   action_spec=env.action_spec)
    return make_gaussian_actor(s.num_tasks, s.obs_max, s.act_max, cfg.sac_hidden, shared_trunk=False,
                               activation=nn.ReLU, action_spec=env.action_spec)


def _concat(observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    return torch.cat([observation, action], -1)


def make_sac_qvalue(cfg: Config, env: MultiTaskEnv) -> TensorDictSequential:
    """K independent Q networks ``(observation, action, task_id) → state_action_value``."""
    s = env.suite
    net = MultiHeadMLP(s.num_tasks, s.obs_max + s.act_max, 1, cfg.sac_hidden, nn.ReLU, shared_trunk=False)
    return TensorDictSequential(
        TensorDictModule(_concat, in_keys=["observation", "action"], out_keys=["observation_action"]),
        TensorDictModule(net, in_keys=["observation_action", "task_id"], out_keys=["state_action_value"]))


def train_sac_teachers(cfg: Config, run_dir: str) -> None:
    """K per-task SAC agents trained together (stacked networks, one batched update per env step; the entropy
    temperature α is shared). Writes ``model.pt`` (``{"actor": ...}``) and ``summary.json`` into ``run_dir``."""
    env = make_env(cfg.suite, seed=cfg.seed + 20_000, task_onehot=False)
    s = env.suite
    actor, qvalue = make_teacher_actor(cfg, env), make_sac_qvalue(cfg, env)
    loss = SACLoss(actor, qvalue, num_qvalue_nets=2, loss_function="l2", alpha_init=1.0,
                   target_entropy=-float(s.act_max), action_spec=env.action_spec)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.99)
    target = SoftUpdate(loss, tau=0.005)
    optim = torch.optim.Adam(loss.parameters(), lr=cfg.sac_lr)
    replay = PerTaskReplayBuffer(s.num_tasks, min(cfg.sac_buffer_per_task, cfg.teacher_frames_per_task),
                                 cfg.sac_batch_per_task)
    run = TrainingRun(run_dir, checkpoint_every=cfg.checkpoint_every)
    get_state = lambda: {"loss": loss.state_dict(), "optim": optim.state_dict()}  # noqa: E731

    def load(state: dict) -> None:
        loss.load_state_dict(state["loss"])
        optim.load_state_dict(state["optim"])

    frames = run.resume(load, {"replay": replay})
    rollouts = Rollouts(env)
    with run.guard(get_state, {"replay": replay}) as guard, tqdm(total=cfg.teacher_frames_per_task, initial=frames,
                                                                  desc="sac teachers") as bar:
        while frames < cfg.teacher_frames_per_task:
            exploring = frames < cfg.sac_random_frames
            replay.extend(rollouts.collect(_random_policy(env) if exploring else actor, 1))
            if not exploring:
                losses = loss(replay.sample())
                optim.zero_grad(set_to_none=True)
                (losses["loss_actor"] + losses["loss_qvalue"] + losses["loss_alpha"]).backward()
                optim.step()
                target.step()
            frames += 1
            bar.update(1)
            if crossed(frames - 1, frames, cfg.log_every) and not exploring:
                run.metrics.log(frames, loss_actor=losses["loss_actor"].item(), alpha=losses["alpha"].item(),
                                loss_qvalue=losses["loss_qvalue"].item(), **rollouts.pop_returns(s.task_names))
            if crossed(frames - 1, frames, cfg.checkpoint_every):
                run.save(frames, get_state, {"replay": replay})
            guard.check(frames)
    torch.save({"actor": actor.state_dict()}, run.dir / MODEL_FILE)
    run.finish({"teacher_algo": "sac", "frames_per_task": frames})
    env.close()


def _random_policy(env: MultiTaskEnv):
    def act(td: TensorDictBase) -> TensorDictBase:
        return td.set("action", env.action_spec.rand())
    return act


def teachers_model_path(cfg: Config) -> str:
    """Train (or resume) the teachers in ``<run_dir>/teachers`` unless ``teacher_path`` is given."""
    if cfg.teacher_path:
        return cfg.teacher_path
    teacher_dir = f"{cfg.run_dir}/teachers"
    done = (Path(teacher_dir) / SUMMARY).exists()
    if not done and cfg.teacher_algo == "sac":
        train_sac_teachers(cfg, teacher_dir)
    elif not done:
        a2c_multitask.run(a2c_multitask.Config(
            suite=cfg.suite, seed=cfg.seed + 20_000, run_dir=teacher_dir, architecture="independent",
            frames_per_task=cfg.teacher_frames_per_task, num_envs_per_task=cfg.teacher_envs_per_task,
            eval_every=0, eval_episodes=cfg.eval_episodes, log_every=cfg.log_every,
            checkpoint_every=cfg.checkpoint_every, threads=cfg.threads))
    return f"{teacher_dir}/{MODEL_FILE}"


# ------------------------------------------------------------------------------------------------------ student
class MixedBehaviour:
    """Acts with the student on tasks where ``use_student[k]`` else with the teacher; stores the teacher's
    pre-squash Gaussian under ``("teacher", "loc")`` / ``("teacher", "scale")`` for the distillation loss."""

    def __init__(self, student, teacher, num_tasks: int):
        self.student, self.teacher = student, teacher
        self.use_student = torch.ones(num_tasks, dtype=torch.bool)

    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        teacher_td = self.teacher(td.select("observation", "task_id").copy())
        td = self.student(td)
        from_student = self.use_student[td.get("task_id")].unsqueeze(-1)
        td.set("action", torch.where(from_student, td.get("action"), teacher_td.get("action")))
        td.set(("teacher", "loc"), teacher_td.get("loc"))
        td.set(("teacher", "scale"), teacher_td.get("scale"))
        return td


def distill(cfg: Config, student, teacher, run: TrainingRun, env: MultiTaskEnv,
            eval_env: MultiTaskEnv) -> EvalResult:
    """The distillation loop (module doc, step 2); returns the final evaluation of the student's heads."""
    s = env.suite
    loss = KLGaussianDistillLoss(student, teacher, direction=cfg.direction,
                                 action_mask=action_masks(s.act_dims, s.act_max))
    optim = torch.optim.RMSprop(loss.parameters(), lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps)
    heads = actor_net(student).stacked_parameters()
    get_state = lambda: {"student": student.state_dict(), "optim": optim.state_dict()}  # noqa: E731

    def load(state: dict) -> None:
        student.load_state_dict(state["student"])
        optim.load_state_dict(state["optim"])

    frames = run.resume(load)
    behaviour, rollouts = MixedBehaviour(student, teacher, s.num_tasks), Rollouts(env)
    per_iter = cfg.t_max * cfg.num_envs_per_task
    kl = torch.zeros(())
    with run.guard(get_state) as guard, tqdm(total=cfg.frames_per_task, initial=frames, desc="distill") as bar:
        while frames < cfg.frames_per_task:
            if cfg.lr_schedule == "linear":
                for group in optim.param_groups:
                    group["lr"] = cfg.lr * (1 - frames / cfg.frames_per_task)
            behaviour.use_student = torch.rand(s.num_tasks) < cfg.p_student
            batch = rollouts.collect(behaviour, cfg.t_max)
            parts = [(batch[k], k) for k in range(s.num_tasks)] if cfg.update == "cycle" else [(batch, None)]
            for data, task in parts * cfg.epochs:
                kl = loss(data)["loss_kl"]
                optim.zero_grad(set_to_none=True)
                kl.backward()
                nn.utils.clip_grad_norm_(list(loss.parameters()), cfg.max_grad_norm)
                if task is None:
                    optim.step()
                else:
                    step_keeping_other_rows(optim, heads, task)
            before, frames = frames, frames + per_iter
            bar.update(per_iter)
            if crossed(before, frames, cfg.log_every):
                run.metrics.log(frames, loss_kl=kl.item(), **rollouts.pop_returns(s.task_names, "behaviour"))
            if crossed(before, frames, cfg.eval_every) and frames < cfg.frames_per_task:
                run.evals.log(frames, **eval_row([evaluate(eval_env, student)]))
            if crossed(before, frames, cfg.checkpoint_every):
                run.save(frames, get_state)
            guard.check(frames)
    result = paired_evaluate(eval_env, student, cfg.seed + 10_000)
    run.evals.log(frames, **eval_row([result]))
    return result


def paired_evaluate(env: MultiTaskEnv, policy, seed: int) -> EvalResult:
    """:func:`tdmt.eval.evaluate` from the same initial states each call (student, teacher and random policy are
    compared on identical episodes starts, which removes most of the noise from their return differences)."""
    env.set_seed(seed)
    return evaluate(env, policy)


def normalised_scores(student: EvalResult, teacher: EvalResult, random: EvalResult) -> list[float]:
    """``(R_student − R_random) / (R_teacher − R_random)`` per task (1 = the teacher's return, 0 = random's)."""
    return [(s - r) / (t - r) if t != r else float("nan")
            for s, t, r in zip(student.return_mean, teacher.return_mean, random.return_mean)]


def run(cfg: Config) -> dict:
    """Train (or load) the teachers, distil them into a multi-head student, evaluate; returns the summary."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    cfg = dataclasses.replace(cfg, run_dir=default_run_dir("distill_kl", cfg.suite, cfg.seed, cfg.run_dir))
    start = time.time()
    model_path = teachers_model_path(cfg)
    training = TrainingRun(cfg.run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    suite = get_suite(cfg.suite)
    env = make_env(cfg.suite, seed=cfg.seed, num_envs_per_task=cfg.num_envs_per_task, task_onehot=False)
    eval_env = make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=cfg.eval_episodes, task_onehot=False)
    teacher = make_teacher_actor(cfg, env)
    teacher.load_state_dict(torch.load(model_path)["actor"])
    teacher.requires_grad_(False)
    student = make_gaussian_actor(suite.num_tasks, suite.obs_max, suite.act_max, cfg.student_hidden,
                                  action_spec=env.action_spec)
    result = distill(cfg, student, teacher, training, env, eval_env)
    teacher_result = paired_evaluate(eval_env, teacher, cfg.seed + 10_000)
    random_result = paired_evaluate(eval_env, _random_policy(eval_env), cfg.seed + 10_000)
    scores = normalised_scores(result, teacher_result, random_result)
    write_report(training, f"KL distillation ({cfg.direction}) — {cfg.suite}",
                 table2(suite.task_names, {
                     cfg.teacher_label: (teacher_result, f"from {cfg.teacher_path}" if cfg.teacher_path
                                         else f"{frames_text(cfg.teacher_frames_per_task)} per task"),
                     "Distillation multi-task": (result, f"{frames_text(cfg.frames_per_task)} per task")}),
                 suite.task_names, notes=_score_table(suite.task_names, teacher_result, random_result, scores))
    summary = {"recipe": "distill_kl", "suite": cfg.suite, "seed": cfg.seed, "frames_per_task": cfg.frames_per_task,
               "teacher_algo": cfg.teacher_algo, "wall_s": time.time() - start, **eval_row([result]),
               **{f"teacher/{k.split('/', 1)[1]}": v for k, v in eval_row([teacher_result]).items()},
               **{f"random/{n}/return": r for n, r in zip(suite.task_names, random_result.return_mean)},
               **{f"normalised/{n}": v for n, v in zip(suite.task_names, scores)}}
    training.finish(summary)
    env.close()
    eval_env.close()
    return summary


def _score_table(task_names, teacher: EvalResult, random: EvalResult, scores: list[float]) -> str:
    rows = [[n, format_cell(t, ts), format_cell(r, rs), f"{sc:.3f}"] for n, t, ts, r, rs, sc in zip(
        task_names, teacher.return_mean, teacher.return_std, random.return_mean, random.return_std, scores)]
    return ("\nNormalised score of the student, (R_student − R_random) / (R_teacher − R_random):\n\n"
            + markdown_table(["Environment", "Teacher", "Random policy", "Normalised score"], rows))
