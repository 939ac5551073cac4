"""Multi-task policy distillation with a KL-Gaussian loss (Arora et al. §3.1.3, §3.1.4, §4.3.2; DESIGN §5).

1. Teachers: one Gaussian policy per task, trained alone (K independent networks trained as one batched model):
   ``teacher_algo="a2c"`` (the paper: single-task A2C, 3M frames each; the ``a2c_multitask`` recipe with
   ``architecture="independent"``) or ``"sac"`` (a TanhNormal SAC actor, much faster to train on small tasks).
   ``teacher_path`` reuses the ``model.pt`` of an earlier teacher run instead.
   A2C teachers are the paper's Gaussian policy (``policy``) and normalise observations (``obs_norm``); their
   frozen statistics normalise what the teachers and the student see, and are saved with the student.
2. Student: an actor only, shared hidden layers (2×64) and one head per task, the teachers' kind of Gaussian (with
   ``policy="gaussian"`` one learned state-independent σ per head, which the KL pulls to its teacher's σ; SAC
   teachers: a TanhNormal student). Each iteration collects a ``t_max``
   rollout of E envs per task, acted by the student with probability ``p_student`` (drawn per task and rollout)
   else by the teacher; the teacher's Gaussian (μ_T, σ_T) is stored with every state (the paper's targets Y), and
   head k is updated on task k's rollout with ``KL(T_k ‖ S_k)`` (``direction="forward"``; ``"reverse"``: KL(S‖T)),
   tasks cycled as in vanilla multi-task (``update="cycle"``) or all at once (``"joint"``).
3. Evaluation of each head over ``eval_episodes`` episodes, next to the teachers (Table 2's Scratch column when
   the teachers are A2C) and a uniform random policy; ``results.md`` also gives the normalised score
   ``(R_student − R_random) / (R_teacher − R_random)`` per task.

Device as in ``a2c_multitask`` (``device=``): teachers (loaded with ``map_location="cpu"``, then copied into the
device's modules), student, loss, optimiser state, observation statistics and rollouts on the training device; the
KL update and the mixed-behaviour collection make no host read between logging intervals; ``compile``/
``cudagraphs`` wrap the KL update, ``precision`` autocasts it; ``model.pt`` holds CPU tensors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.envs import EnvBase
from torchrl.objectives import SACLoss, SoftUpdate, ValueEstimators

from tdmt import tables
from tdmt.algos import a2c_multitask
from tdmt.algos.a2c_multitask import (
    MODEL_FILE,
    Rollouts,
    cpu_copy,
    crossed,
    eval_row,
    frames_text,
    raw_observation_policy,
    read_scalars,
    set_capturable,
    step_keeping_other_rows,
    write_report,
)
from tdmt.algos.run import SUMMARY, TrainingRun
from tdmt.config import BaseConfig
from tdmt.data import PerTaskReplayBuffer
from tdmt.device import autocast, speed_wrap
from tdmt.envs import MultiTaskEnv, TaskObservationNorm, action_masks, get_suite, make_env
from tdmt.envs.normalize import normalized
from tdmt.eval import EvalResult, evaluate
from tdmt.modules.multihead import MultiHeadMLP, actor_stacked_parameters, make_gaussian_actor, task_layout
from tdmt.objectives import KLGaussianDistillLoss
from tdmt.progress import tqdm
from tdmt.report import markdown_table


@dataclass
class Config(BaseConfig):
    """KL distillation of K per-task teachers into one multi-head student, Arora et al. (paper defaults)."""

    suite: str = "halfcheetah-arora6"  # the task suite (``tdmt.envs.list_suites()``)
    # teachers
    teacher_algo: Literal["a2c", "sac"] = "a2c"  # a2c: single-task A2C teachers (paper); sac: SAC (tdmt, faster)
    teacher_path: str = ""  # a teachers' model.pt to reuse (built with the same teacher_algo); empty: train them
    teacher_total_steps: int = 3_000_000  # frames per task for the teachers (paper: 3M)
    teacher_envs_per_task: int = 16  # A2C teachers' parallel envs per task; SAC teachers step one env per task
    policy: Literal["gaussian", "tanh_normal"] = "gaussian"  # A2C teachers' and student's policy (SAC: tanh_normal)
    obs_norm: bool = True  # A2C teachers normalise observations (public code); the student reads their statistics
    sac_hidden: tuple[int, ...] = (256, 256)  # SAC teachers' hidden layers
    sac_lr: float = 3e-4  # SAC teachers' Adam learning rate
    sac_batch_size_per_task: int = 256  # SAC teachers' minibatch per task
    sac_random_frames: int = 1000  # per task, uniform random actions before the SAC actor acts
    sac_buffer_size_per_task: int = 1_000_000  # SAC teachers' replay size per task
    # student
    total_steps: int = 1_000_000  # frames per task for the student (paper: 1M)
    num_envs_per_task: int = 16  # parallel envs per task
    t_max: int = 5  # rollout length
    p_student: float = 1.0  # probability that a task's rollout is acted by the student (paper §3.1.4: 1)
    epochs: int = 1  # gradient steps on each rollout (the paper: 1)
    direction: Literal["forward", "reverse"] = "forward"  # forward: KL(teacher‖student) (paper); reverse: KL(S‖T)
    update: Literal["cycle", "joint"] = "cycle"  # cycle: one update per task in turn (paper); joint: one on all
    lr: float = 7e-4  # student RMSprop learning rate
    lr_schedule: Literal["constant", "linear"] = "constant"  # linear: decays to 0 at total_steps
    rmsprop_alpha: float = 0.99  # RMSprop smoothing constant
    rmsprop_eps: float = 1e-5  # RMSprop epsilon
    max_grad_norm: float = 0.5  # gradient norm clip
    student_hidden: tuple[int, ...] = (64, 64)  # student's shared hidden layers (paper: 2×64)
    # evaluation, logs, checkpoints (frames per task)
    eval_every: int = 100_000  # frames per task between evaluations (0: only at the end)
    eval_episodes: int = 20  # evaluation episodes per task (paper: 20 rollouts)
    log_every: int = 10_000  # frames per task between metrics rows
    checkpoint_every: int = 100_000  # frames per task between checkpoints (0: only when stopped)

    RANGES: ClassVar[dict[str, str]] = {
        "teacher_total_steps": ">= 1", "teacher_envs_per_task": ">= 1", "sac_batch_size_per_task": ">= 1",
        "sac_buffer_size_per_task": ">= 1", "sac_random_frames": ">= 0", "epochs": ">= 1",
        "sac_hidden": "non-empty sizes >= 1", "student_hidden": "non-empty sizes >= 1"}

    @property
    def teacher_label(self) -> str:
        return "Scratch" if self.teacher_algo == "a2c" else "Teachers (SAC)"

    @property
    def distribution(self) -> str:
        """The teachers' (and so the student's) policy distribution: SAC's is always ``tanh_normal``."""
        return self.policy if self.teacher_algo == "a2c" else "tanh_normal"


# ----------------------------------------------------------------------------------------------------- teachers
def make_teacher_actor(cfg: Config, env: MultiTaskEnv):
    """K independent Gaussian actors (no shared layer): A2C's 2×64 tanh (``cfg.policy``), or SAC's ``sac_hidden``
    ReLU TanhNormal."""
    s = env.suite
    if cfg.teacher_algo == "a2c":
        actor = make_gaussian_actor(s.num_tasks, s.obs_max, s.act_max, (64, 64), shared_trunk=False,
                                    action_spec=env.action_spec, distribution=cfg.distribution, act_dims=s.act_dims)
    else:
        actor = make_gaussian_actor(s.num_tasks, s.obs_max, s.act_max, cfg.sac_hidden, shared_trunk=False,
                                    activation=nn.ReLU, action_spec=env.action_spec, distribution=cfg.distribution,
                                    act_dims=s.act_dims)
    return actor.to(cfg.device)


def _concat(observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    return torch.cat([observation, action], -1)


def make_sac_qvalue(cfg: Config, env: MultiTaskEnv) -> TensorDictSequential:
    """K independent Q networks ``(observation, action, task_id) → state_action_value``."""
    s = env.suite
    net = MultiHeadMLP(s.num_tasks, s.obs_max + s.act_max, 1, cfg.sac_hidden, nn.ReLU, shared_trunk=False)
    return TensorDictSequential(
        TensorDictModule(_concat, in_keys=["observation", "action"], out_keys=["observation_action"]),
        TensorDictModule(net, in_keys=["observation_action", "task_id"], out_keys=["state_action_value"])
    ).to(cfg.device)


def train_sac_teachers(cfg: Config, run_dir: str) -> None:
    """K per-task SAC agents trained together (stacked networks, one batched update per env step; the entropy
    temperature α is shared). Writes ``model.pt`` (``{"actor": ...}``) and ``summary.json`` into ``run_dir``."""
    env = make_env(cfg.suite, seed=cfg.seed + 20_000, task_onehot=False, device=cfg.device)
    s = env.suite
    actor, qvalue = make_teacher_actor(cfg, env), make_sac_qvalue(cfg, env)
    loss = SACLoss(actor, qvalue, num_qvalue_nets=2, loss_function="l2", alpha_init=1.0,
                   target_entropy=-float(s.act_max), action_spec=env.action_spec).to(cfg.device)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.99)
    target = SoftUpdate(loss, tau=0.005)
    optim = torch.optim.Adam(loss.parameters(), lr=cfg.sac_lr)
    replay = PerTaskReplayBuffer(s.num_tasks, min(cfg.sac_buffer_size_per_task, cfg.teacher_total_steps),
                                 cfg.sac_batch_size_per_task, device=cfg.device)
    run = TrainingRun(run_dir, checkpoint_every=cfg.checkpoint_every)
    get_state = lambda: {"loss": loss.state_dict(), "optim": optim.state_dict()}  # noqa: E731

    def load(state: dict) -> None:
        loss.load_state_dict(state["loss"])
        optim.load_state_dict(state["optim"])

    frames = run.resume(load, {"replay": replay})
    rollouts = Rollouts(env)
    with run.guard(get_state, {"replay": replay}) as guard, tqdm(total=cfg.teacher_total_steps, initial=frames,
                                                                  desc="sac teachers", disable=not cfg.progress) as bar:
        while frames < cfg.teacher_total_steps:
            exploring = frames < cfg.sac_random_frames
            replay.extend(rollouts.collect(_random_policy(env) if exploring else actor, 1))
            if not exploring:
                with task_layout("task_major"):  # the replay's [K, N] sample
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
    torch.save(cpu_copy({"actor": actor.state_dict()}), run.dir / MODEL_FILE)
    run.finish({"teacher_algo": "sac", "total_steps": frames})
    env.close()


def _random_policy(env: MultiTaskEnv):
    def act(td: TensorDictBase) -> TensorDictBase:
        return td.set("action", env.action_spec.rand())
    return act


def teachers_model_path(cfg: Config, run_dir: str) -> str:
    """Train (or resume) the teachers in ``<run_dir>/teachers`` unless ``teacher_path`` is given."""
    if cfg.teacher_path:
        return cfg.teacher_path
    teacher_dir = f"{run_dir}/teachers"
    done = (Path(teacher_dir) / SUMMARY).exists()
    if not done and cfg.teacher_algo == "sac":
        train_sac_teachers(cfg, teacher_dir)
    elif not done:
        a2c_multitask.run(a2c_multitask.Config(
            suite=cfg.suite, seed=cfg.seed + 20_000, run_dir=teacher_dir, architecture="independent",
            total_steps=cfg.teacher_total_steps, num_envs_per_task=cfg.teacher_envs_per_task, policy=cfg.policy,
            obs_norm=cfg.obs_norm, eval_every=0, eval_episodes=cfg.eval_episodes, log_every=cfg.log_every,
            checkpoint_every=cfg.checkpoint_every, threads=cfg.threads, logger=cfg.logger, progress=cfg.progress,
            device=cfg.device, precision=cfg.precision, compile=cfg.compile, cudagraphs=cfg.cudagraphs))
    return f"{teacher_dir}/{MODEL_FILE}"


# ------------------------------------------------------------------------------------------------------ student
class MixedBehaviour:
    """Acts with the student on tasks where ``use_student[k]`` else with the teacher; stores the teacher's
    pre-squash Gaussian under ``("teacher", "loc")`` / ``("teacher", "scale")`` for the distillation loss."""

    def __init__(self, student, teacher, num_tasks: int, device: torch.device | str = "cpu"):
        self.student, self.teacher = student, teacher
        self.use_student = torch.ones(num_tasks, dtype=torch.bool, device=device)

    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        teacher_td = self.teacher(td.select("observation", "task_id").copy())
        td = self.student(td)
        from_student = self.use_student[td.get("task_id")].unsqueeze(-1)
        td.set("action", torch.where(from_student, td.get("action"), teacher_td.get("action")))
        td.set(("teacher", "loc"), teacher_td.get("loc"))
        td.set(("teacher", "scale"), teacher_td.get("scale"))
        return td


class KLStudentLearner:
    """The student's KL update (module doc, step 2): ``KL(T_k ‖ S_k)`` on task k's rollout (or every task's), its
    gradient clipped, RMSprop stepping head k alone (:func:`step_keeping_other_rows`) or every head.

    ``update`` makes no host read; with ``compile``/``cudagraphs`` it runs :func:`tdmt.device.speed_wrap`'d
    functions, one per schedule branch. With ``lr_schedule="linear"`` under a speed option the learning rate is a
    device tensor updated in place (a changing Python float would recompile the update every iteration).
    """

    def __init__(self, cfg: Config, student, teacher, act_dims, act_max: int):
        self.cfg, self.device = cfg, torch.device(cfg.device)
        self.student = student
        self.loss = KLGaussianDistillLoss(student, teacher, direction=cfg.direction,
                                          action_mask=action_masks(act_dims, act_max)).to(self.device)
        speed = cfg.compile or cfg.cudagraphs
        lr = torch.tensor(cfg.lr, device=self.device) if speed and cfg.lr_schedule == "linear" else cfg.lr
        # a tensor lr on CUDA needs the capturable (foreach) step, or each step reads it on the host
        capturable = cfg.cudagraphs or (isinstance(lr, torch.Tensor) and self.device.type == "cuda")
        self.optim = torch.optim.RMSprop(self.loss.parameters(), lr=lr, alpha=cfg.rmsprop_alpha,
                                         eps=cfg.rmsprop_eps, capturable=capturable)
        self.heads = actor_stacked_parameters(student)
        self.params = list(self.loss.parameters())
        self.task_index = torch.arange(len(act_dims), device=self.device)
        wrap = dict(compile=cfg.compile, cudagraphs=cfg.cudagraphs, device=self.device)
        self._update_task = speed_wrap(self._step_task, **wrap)
        self._update_all = speed_wrap(self._step_all, **wrap)

    def set_lr(self, lr: float) -> None:
        for group in self.optim.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def update(self, data: TensorDictBase, task: int | None = None) -> torch.Tensor:
        """One step on task ``task``'s rollout ``data`` (``batch[task]``), or on every task's (``[K, E, T]``);
        returns the KL (a 0-dim tensor)."""
        if task is None:
            with task_layout("task_major"):
                return self._update_all(data)
        with task_layout("one_task"):
            return self._update_task(data, self.task_index[task])

    def _backward(self, data: TensorDictBase) -> torch.Tensor:
        with autocast(self.device, self.cfg.precision):
            kl = self.loss(data).get("loss_kl")
        self.optim.zero_grad(set_to_none=True)
        kl.backward()
        nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        return kl.detach().float()

    def _step_task(self, data: TensorDictBase, task: torch.Tensor) -> torch.Tensor:
        kl = self._backward(data)
        step_keeping_other_rows(self.optim, self.heads, task)
        return kl

    def _step_all(self, data: TensorDictBase) -> torch.Tensor:
        kl = self._backward(data)
        self.optim.step()
        return kl

    def state_dict(self) -> dict:
        return {"student": self.student.state_dict(), "optim": self.optim.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        lrs = [group["lr"] for group in self.optim.param_groups]
        self.optim.load_state_dict(state["optim"])
        for group, lr in zip(self.optim.param_groups, lrs):  # this run's lr kind (a float or a device tensor)
            group["lr"] = lr
        set_capturable(self.optim, self.optim.defaults["capturable"])


def distill(cfg: Config, student, teacher, run: TrainingRun, env: MultiTaskEnv,
            eval_env: MultiTaskEnv) -> EvalResult:
    """The distillation loop (module doc, step 2); returns the final evaluation of the student's heads."""
    s = env.suite
    learner = KLStudentLearner(cfg, student, teacher, s.act_dims, s.act_max)
    frames = run.resume(learner.load_state_dict)
    behaviour, rollouts = MixedBehaviour(student, teacher, s.num_tasks, env.device), Rollouts(env)
    per_iter = cfg.t_max * cfg.num_envs_per_task
    kl = torch.zeros((), device=env.device)
    with run.guard(learner.state_dict) as guard, tqdm(total=cfg.total_steps, initial=frames, desc="distill",
                                                       disable=not cfg.progress) as bar:
        while frames < cfg.total_steps:
            if cfg.lr_schedule == "linear":
                learner.set_lr(cfg.lr * (1 - frames / cfg.total_steps))
            behaviour.use_student = torch.rand(s.num_tasks, device=env.device) < cfg.p_student
            batch = rollouts.collect(behaviour, cfg.t_max)
            parts = [(batch[k], k) for k in range(s.num_tasks)] if cfg.update == "cycle" else [(batch, None)]
            for data, task in parts * cfg.epochs:
                kl = learner.update(data, task)
            before, frames = frames, frames + per_iter
            bar.update(per_iter)
            if crossed(before, frames, cfg.log_every):
                run.metrics.log(frames, **read_scalars({"loss_kl": kl}),
                                **rollouts.pop_returns(s.task_names, "behaviour"))
            if crossed(before, frames, cfg.eval_every) and frames < cfg.total_steps:
                run.evals.log(frames, **eval_row([evaluate(eval_env, student)]))
            if crossed(before, frames, cfg.checkpoint_every):
                run.save(frames, learner.state_dict)
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
    return [tables.normalised(s, t, r) for s, t, r in zip(student.return_mean, teacher.return_mean, random.return_mean)]


def teachers_obs_norm(state: dict, num_tasks: int, obs_dim: int,
                      device: torch.device | str = "cpu") -> TaskObservationNorm | None:
    """The teachers' observation statistics from their ``model.pt`` (A2C teachers with ``obs_norm``), else ``None``."""
    if "obs_norm" not in state:
        return None
    norm = TaskObservationNorm(num_tasks, obs_dim, device=device)
    norm.load_state_dict(state["obs_norm"])
    return norm


def load_model_policy(cfg: Config, model_path: str) -> Callable[[TensorDictBase], TensorDictBase]:
    """The distilled student in a ``distill_kl`` ``model.pt`` trained with ``cfg``, acting on raw observations of
    ``make_env(cfg.suite)`` (normalised first with the saved teachers' statistics, if any), on the CPU whatever
    device trained it."""
    suite = get_suite(cfg.suite)
    state = torch.load(model_path, map_location="cpu")
    student = make_gaussian_actor(suite.num_tasks, suite.obs_max, suite.act_max, cfg.student_hidden,
                                  distribution=cfg.distribution, act_dims=suite.act_dims)
    student.load_state_dict(state["actor"])
    return raw_observation_policy(student, teachers_obs_norm(state, suite.num_tasks, suite.obs_max))


def make_student(cfg: Config, env: MultiTaskEnv):
    """The multi-head student (shared ``student_hidden`` layers, one head per task) on the training device."""
    s = env.suite
    return make_gaussian_actor(s.num_tasks, s.obs_max, s.act_max, cfg.student_hidden, action_spec=env.action_spec,
                               distribution=cfg.distribution, act_dims=s.act_dims).to(cfg.device)


def _seen_through(env: MultiTaskEnv, norm: TaskObservationNorm | None) -> EnvBase:
    return env if norm is None else normalized(env, norm.frozen())


def run(cfg: Config) -> dict:
    """Train (or load) the teachers, distil them into a multi-head student, evaluate; returns the summary.

    The teachers' observation statistics (frozen) normalise what teachers and student see, and are saved with the
    student in ``model.pt`` (``{"actor": ..., "obs_norm": ...}``, the layout of ``a2c_multitask``'s ``model.pt``).
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = cfg.resolved_run_dir()
    start = time.time()
    model_path = teachers_model_path(cfg, run_dir)
    training = TrainingRun(run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    suite = get_suite(cfg.suite)
    teacher_state = torch.load(model_path, map_location="cpu")  # a GPU run's teachers load anywhere
    norm = teachers_obs_norm(teacher_state, suite.num_tasks, suite.obs_max, cfg.device)
    base_env = make_env(cfg.suite, seed=cfg.seed, num_envs_per_task=cfg.num_envs_per_task, task_onehot=False,
                        device=cfg.device)
    base_eval = make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=cfg.eval_episodes, task_onehot=False,
                         device=cfg.device)
    env, eval_env = _seen_through(base_env, norm), _seen_through(base_eval, norm)
    teacher = make_teacher_actor(cfg, base_env)
    teacher.load_state_dict(teacher_state["actor"])
    teacher.requires_grad_(False)
    student = make_student(cfg, base_env)
    result = distill(cfg, student, teacher, training, env, eval_env)
    torch.save(cpu_copy({"actor": student.state_dict(), **({"obs_norm": norm.state_dict()} if norm is not None
                                                             else {})}), training.dir / MODEL_FILE)
    teacher_result = paired_evaluate(eval_env, teacher, cfg.seed + 10_000)
    random_result = paired_evaluate(eval_env, _random_policy(base_eval), cfg.seed + 10_000)
    scores = normalised_scores(result, teacher_result, random_result)
    teacher_budget = (f"from {cfg.teacher_path}" if cfg.teacher_path
                      else f"{frames_text(cfg.teacher_total_steps)} per task")
    write_report(training, f"KL distillation ({cfg.direction}) — {cfg.suite}",
                 {f"{cfg.teacher_label} ({teacher_budget})": [[teacher_result.as_row()]],
                  f"Distillation multi-task ({frames_text(cfg.total_steps)} per task)": [training.evals.rows()]},
                 suite.task_names, notes=_score_table(suite.task_names, teacher_result.as_row(),
                                                      random_result.as_row(), training.evals.rows()))
    summary = {"recipe": "distill_kl", "suite": cfg.suite, "seed": cfg.seed, "total_steps": cfg.total_steps,
               "teacher_algo": cfg.teacher_algo, "wall_s": time.time() - start, **eval_row([result]),
               **{f"teacher/{k.split('/', 1)[1]}": v for k, v in eval_row([teacher_result]).items()},
               **{f"random/{n}/return": r for n, r in zip(suite.task_names, random_result.return_mean)},
               **{f"normalised/{n}": v for n, v in zip(suite.task_names, scores)}}
    training.finish(summary)
    base_env.close()
    base_eval.close()
    return summary


def _score_table(task_names: list[str], teacher: dict, random: dict, student: tables.Rows) -> str:
    """Arora's normalised score of the student's final evaluation (:func:`tdmt.tables.normalised`) per task, next
    to the teacher's and the random policy's evaluation rows (mean ± std over the episodes)."""
    rows = []
    for name in task_names:
        values = [tables.task_score(r, name, "final_return") for r in ([teacher], [random], student)]
        spreads = [tables.episode_std(r, name, "final_return") for r in ([teacher], [random])]
        rows.append([name, *(tables.cell(tables.Stat.of([v]), s) for v, s in zip(values, spreads)),
                     f"{tables.normalised(values[2], values[0], values[1]):.3f}"])
    return ("\nNormalised score of the student, (R_student − R_random) / (R_teacher − R_random):\n\n"
            + markdown_table(["Environment", "Teacher", "Random policy", "Normalised score"], rows))
