"""Recipe ``sac_mt``: multi-task SAC with per-task replay and action mask — the SAC-MT baseline of KTM-DRL
(Table 1) and the "Base" runs of CTPG (Table 1) for ``backbone=mtsac|mhsac|pcgrad|sm|paco``.

API summary
-----------
* ``Config``: the paper's hyper-parameters (CTPG App. F.3, DESIGN §6): Adam lr 1e-4 (actor, critic, α), batch
  128 per task (128·K), γ 0.99, τ 0.005, reward scale 0.1, 2000 exploration steps then 1 update per env step,
  2×400 (HalfCheetah) / 5×400 (Meta-World) networks (PaCo 3×400 and SM's own sizes on Meta-World), per-task α,
  mask-out (3000 after 100k steps), loss rescaling. ``hidden=()`` picks the paper's size for the suite;
  ``buffer_size_per_task=0`` the paper's replay TOTAL for the suite split over the K tasks (5e5 MT5, 1e6 MT8/MT10,
  1e7 MT50: :data:`PAPER_REPLAY_TOTAL`). Where the paper is silent, the public code (DarkDawn233/CTPG) decides:
  ``alpha_loss="alpha"``, ``alpha_max=1``, ``max_grad_norm=0.1``, ``mask_out_on="critic"``, ``paco_reset``,
  ``sm_routing_input="state_and_task"``.
* ``MultiTaskSAC(cfg, suite)``: networks + ``MultiTaskSACLoss`` + optimizers (PCGrad-wrapped for
  ``backbone=pcgrad``) + ``SoftUpdate``; ``update(batch) -> metrics``, ``explore(td, random=False)``,
  ``act(td)`` (the policy for ``evaluate``), ``state_dict()``/``load_state_dict()``. The CTPG recipe can reuse
  it for its control policies.
* ``run(cfg) -> summary``: the training loop (one env step of all K tasks = one "step"; ``total_steps`` is the
  sample budget per task), evaluation every ``eval_every`` steps over ``eval_episodes`` and of the final policy over
  ``final_eval_episodes`` (100: CTPG Table 1), on at most ``MAX_EVAL_ENVS_PER_TASK`` env instances per task
  (:func:`evaluate_episodes` runs more episodes in rounds); checkpoint/resume via ``TrainingRun``; writes
  metrics.csv, eval.csv, results.md, curves.png, summary.json in ``run_dir``.

Device (DESIGN §9): ``device=`` holds networks, optimiser states, targets, temperatures, the replay (unless
``replay_device=`` says otherwise; ``storage=memmap`` needs a CPU replay) and the episode accumulators
(:class:`~tdmt.collect.EpisodeReturns`); the envs step on the CPU and hand over their batch once per step. Between
logging intervals neither an env step nor an update reads the device: training-episode returns are logged every
``log_every`` steps as the mean of the episodes that ended in the interval.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import ClassVar, Literal

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate, ValueEstimators

from tdmt import tables
from tdmt.algos.run import TrainingRun
from tdmt.collect.returns import EpisodeReturns
from tdmt.config import BaseConfig
from tdmt.data import PerTaskReplayBuffer
from tdmt.device import autocast, resolve_device, speed_wrap
from tdmt.envs import MultiTaskEnv, Suite, action_masks, get_suite, make_env
from tdmt.eval import EvalResult, eval_summary, evaluate
from tdmt.modules.backbones import make_sac_backbone, rows_are_tasks
from tdmt.objectives.multitask_sac import MultiTaskSACLoss
from tdmt.optim import PCGrad
from tdmt.progress import tqdm
from tdmt.report import method_name, plot_curves, write_text

Backbone = Literal["mtsac", "mhsac", "pcgrad", "sm", "paco"]
TRANSITION_KEYS = ("observation", "task_id", "action", ("next", "observation"), ("next", "task_id"),
                   ("next", "reward"), ("next", "done"), ("next", "terminated"))


# Replay TOTALS of CTPG App. F.3 Table 3 and the public code's scripts/start.sh (5e5 for MT5; 1e6 MT8/MT10; 1e7
# MT50), split evenly over the tasks (mtrl/replay_buffer.py: ``single_capacity = capacity // task_num``).
PAPER_REPLAY_TOTAL = {"halfcheetah-mt5": 500_000, "halfcheetah-mt8": 1_000_000, "metaworld-mt10": 1_000_000,
                      "metaworld-mt50": 10_000_000}
DEFAULT_REPLAY_TOTAL = 1_000_000  # suites the paper does not use: Table 3's 1e6
MAX_EVAL_ENVS_PER_TASK = 10  # env instances per task an evaluation builds; more episodes run in rounds
MAX_EVAL_ENVS = 100  # and in all: a Meta-World instance holds ~22 MB, so MT50 x 10 would take ~11 GiB


@dataclasses.dataclass
class Config(BaseConfig):
    """sac_mt: multi-task SAC (CTPG's Base runs, KTM-DRL's SAC-MT baseline); defaults are CTPG App. F.3's."""

    suite: str = "halfcheetah-mt5"  # the task suite (``tdmt.envs.list_suites()``)
    backbone: Backbone = "mtsac"  # mtsac | mhsac | pcgrad | sm | paco (CTPG Table 1 columns)
    hidden: tuple[int, ...] = ()  # hidden sizes; () = the paper's for the suite and backbone (paper_sizes)
    total_steps: int = 800_000  # env steps per task (CTPG: 0.8M HalfCheetah, 1.5M Meta-World)
    exploration_steps: int = 2000  # uniform random actions before the first update (App. F.3)
    updates_per_step: int = 1  # SAC updates per env step of all tasks (App. F.3: 1)
    batch_size_per_task: int = 128  # transitions per task in each update (App. F.3: 128 x K)
    buffer_size_per_task: int = 0  # replay per task; 0: the paper's total / K (5e5 MT5, 1e6 MT8/MT10, 1e7 MT50)
    storage: Literal["memory", "memmap"] = "memory"  # replay storage: RAM, or memory-mapped files in the run folder
    lr: float = 1e-4  # Adam learning rate of actor, critics and temperatures (App. F.3)
    gamma: float = 0.99  # discount (App. F.3)
    tau: float = 0.005  # soft target update rate (DESIGN §6; the public code uses 0.01)
    reward_scale: float = 0.1  # rewards are multiplied by this before storage (App. F.3)
    alpha_init: float = 1.0  # initial SAC temperature of every task (public code: init_temperature 1.0)
    alpha_loss: Literal["alpha", "log_alpha"] = "alpha"  # alpha*(-logpi-H) (public code) or -log(alpha)*(logpi+H)
    alpha_max: float = 1.0  # cap on each task's temperature after every step (public code: max_alpha 1.0)
    max_grad_norm: float = 0.1  # gradient-norm clip of actor, critics and temperatures, each (public code: 0.1)
    loss_rescaling: bool = True  # weight task losses by K*softmax(-log alpha) (CTPG Eq. 21)
    mask_out_threshold: float = 3000.0  # drop a task from the total loss when its loss exceeds this (App. F.2)
    mask_out_start: int = 100_000  # env steps before the mask-out may act (App. F.2)
    mask_out_on: Literal["critic", "critic_or_actor"] = "critic"  # the loss that decides the mask-out (public code)
    paco_reset: bool = True  # PaCo: reset a masked-out task's composition weights to a random mix of the others'
    sm_routing_input: Literal["state_and_task", "task"] = "state_and_task"  # SM routes on F(s)*H(z) (public code)
    eval_every: int = 10_000  # env steps per task between evaluations (public code: eval_freq 10000; 0: only the final)
    final_eval_episodes: int = 100  # episodes per task of the final policy's evaluation: the Table 1 number

    replay_device: str = ""  # where the replay lives: "" = the training device; cpu for a GPU run short of memory

    RANGES: ClassVar[dict[str, str]] = {
        "buffer_size_per_task": ">= 0", "exploration_steps": ">= 1", "updates_per_step": ">= 1",
        "alpha_init": "> 0", "alpha_max": "> 0",
        "mask_out_threshold": "> 0", "mask_out_start": ">= 0", "final_eval_episodes": ">= 1",
    }

    def validate(self) -> None:
        super().validate()
        try:
            replay_on = self.replay_on()
        except ValueError as e:
            raise ValueError(f"replay_{e}") from None  # "replay_device='…' is not valid; valid: …"
        if self.replay_device and replay_on.type != "cpu" and self.storage == "memmap":
            raise ValueError(f"storage='memmap' with replay_device={self.replay_device!r} is not valid; valid: "
                             "replay_device=cpu or storage=memory")
        if not self.replay_device and self.storage == "memmap" and resolve_device(self.device).type != "cpu":
            raise ValueError(f"storage='memmap' with device={self.device!r} (the replay lives on the training device) "
                             "is not valid; valid: replay_device=cpu or storage=memory")
        if self.alpha_max < self.alpha_init:
            raise ValueError(f"alpha_max={self.alpha_max} is below alpha_init={self.alpha_init}; valid: alpha_max >= "
                             "alpha_init")

    def replay_on(self) -> torch.device:
        """Where the replay lives: ``replay_device``, or the training device."""
        return resolve_device(self.replay_device or self.device)

    def replay_size_per_task(self, suite: Suite) -> int:
        """``buffer_size_per_task``, or the paper's replay total for ``suite`` split evenly over its K tasks."""
        if self.buffer_size_per_task:
            return self.buffer_size_per_task
        return max(1, PAPER_REPLAY_TOTAL.get(suite.name, DEFAULT_REPLAY_TOTAL) // suite.num_tasks)


def paper_sizes(suite: str, backbone: str, hidden: tuple[int, ...] = (), routing_input: str = "state_and_task"
                ) -> tuple[tuple[int, ...], dict]:
    """Hidden sizes and backbone options of CTPG App. F.3 (Tables 4–8) for ``suite``; ``hidden`` overrides.

    ``routing_input`` is Soft Modularization's (``sm_routing_input``).
    """
    metaworld = suite.startswith("metaworld")
    if backbone == "sm":
        default, options = ((400, 400), {"module_size": 128}) if metaworld else ((400,), {"module_size": 64})
        options["routing_input"] = routing_input
    elif backbone == "paco":
        default, options = (400,) * (3 if metaworld else 2), {}
    else:
        default, options = (400,) * (5 if metaworld else 2), {}
    return (tuple(hidden) or default), options


def adam(params: list[torch.Tensor], lr: float, capturable: bool = False) -> torch.optim.Adam:
    """Adam with the fused kernel where it exists (float32 on CPU or CUDA): one kernel for all parameters, and its
    step counts stay tensors on the parameters' device (the loop kernel reads them with ``.item()``: a host sync per
    parameter on CUDA). ``capturable`` for CUDA-graph capture."""
    fused = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None, capturable=capturable)


class MultiTaskSAC:
    """Networks, ``MultiTaskSACLoss``, optimizers and target updates of one multi-task SAC learner, on ``cfg.device``.

    :meth:`update` makes no host sync (checked in ``tests/test_device_sac.py``); with ``cfg.compile`` /
    ``cfg.cudagraphs`` it runs through :func:`tdmt.device.speed_wrap` (one wrapped function per Python branch: with
    and without PaCo's reset), with ``cfg.precision=bfloat16`` the losses are autocast on the device's type.
    """

    def __init__(self, cfg: Config, suite: Suite):
        self.cfg, self.suite = cfg, suite
        self.device = resolve_device(cfg.device)
        hidden, options = paper_sizes(suite.name, cfg.backbone, cfg.hidden, cfg.sm_routing_input)
        backbone = make_sac_backbone(cfg.backbone, num_tasks=suite.num_tasks, obs_dim=suite.obs_max,
                                     act_dim=suite.act_max, hidden=hidden, **options)
        self.actor = backbone.actor.to(self.device)
        self.mask = action_masks(suite.act_dims, suite.act_max).to(self.device)
        self.loss = MultiTaskSACLoss(self.actor, backbone.qvalue.to(self.device), action_mask=self.mask,
                                     alpha_init=cfg.alpha_init, mask_out_threshold=cfg.mask_out_threshold,
                                     mask_out_start=cfg.mask_out_start, mask_out_on=cfg.mask_out_on,
                                     loss_rescaling=cfg.loss_rescaling, alpha_loss=cfg.alpha_loss,
                                     alpha_max=cfg.alpha_max)
        self.loss.make_value_estimator(ValueEstimators.TD0, gamma=cfg.gamma)
        self.target_updater = SoftUpdate(self.loss, tau=cfg.tau)
        self.params = {"actor": list(self.loss.actor_network_params.values(True, True)),
                       "critic": list(self.loss.qvalue_network_params.values(True, True)),
                       "alpha": [self.loss.log_alpha]}
        capturable = cfg.cudagraphs
        actor_opt = adam(self.params["actor"], cfg.lr, capturable)
        critic_opt = adam(self.params["critic"], cfg.lr, capturable)
        self.pcgrad = cfg.backbone == "pcgrad"
        if self.pcgrad:  # "mean" so that without conflicts the step equals the plain mean loss's
            actor_opt, critic_opt = PCGrad(actor_opt, reduction="mean"), PCGrad(critic_opt, reduction="mean")
        self.optimizers = {"actor": actor_opt, "critic": critic_opt,
                           "alpha": adam(self.params["alpha"], cfg.lr, capturable)}
        self._sources = [*self.params["critic"]]
        self._targets = list(self.loss.target_qvalue_network_params.values(True, True))
        self.paco_reset = cfg.backbone == "paco" and cfg.paco_reset
        wrap = dict(compile=cfg.compile, cudagraphs=cfg.cudagraphs, device=self.device)
        self._step = speed_wrap(functools.partial(self._update_step, reset=False), **wrap)
        self._step_reset = speed_wrap(functools.partial(self._update_step, reset=True), **wrap) \
            if self.paco_reset else None
        self.updates = 0

    def act(self, td: TensorDictBase) -> TensorDictBase:
        """Write ``action`` ~ π (in the current exploration mode) into the env's ``td``, computed on ``device``
        (the env's rows: ``[K]`` or ``[K, E]``, row k task k)."""
        with torch.no_grad(), rows_are_tasks():
            out = self.actor(td.select("observation", "task_id").to(self.device))
        return td.set("action", out.get("action").to(td.device))

    def explore(self, td: TensorDictBase, random: bool = False) -> TensorDictBase:
        """Write ``action`` (masked: padded dims are 0): uniform in [-1, 1] when ``random``, else ``a ~ π``."""
        if random:
            td.set("action", torch.rand(*td.batch_size, self.suite.act_max, device=td.device) * 2 - 1)
        else:
            with set_exploration_type(ExplorationType.RANDOM):
                self.act(td)
        mask = self.mask.to(td.device)[td.get("task_id")]
        return td.set("action", td.get("action") * mask)

    def update(self, batch: TensorDictBase, env_steps: int) -> dict[str, torch.Tensor]:
        """One SAC update on a ``[K, N]`` batch whose row k holds task k (``PerTaskReplayBuffer.sample()``):
        critics, actor, temperatures (each gradient clipped to ``max_grad_norm``, α capped at ``alpha_max``: the
        public code), PaCo's reset of masked-out tasks (from ``mask_out_start``), then the soft target update.
        Returns the loss's outputs (detached tensors on the device: read them at logging intervals only)."""
        self.loss.set_env_steps(env_steps)
        reset = self.paco_reset and env_steps >= self.cfg.mask_out_start
        with rows_are_tasks():
            out = (self._step_reset if reset else self._step)(batch)
        self.updates += 1
        return dict(out.items())

    def _update_step(self, batch: TensorDictBase, reset: bool) -> TensorDictBase:
        """The update itself (what ``compile``/``cudagraphs`` wrap): tensors in, tensors out, no host read."""
        with autocast(self.device, self.cfg.precision):
            out = self.loss(batch)
        for opt in self.optimizers.values():
            opt.zero_grad()
        if self.pcgrad:
            self.optimizers["critic"].backward(out["loss_qvalue"])
            self.optimizers["actor"].backward(out["loss_actor"])
            out["loss_alpha"].mean().backward()
        else:
            (out["loss_qvalue"].mean() + out["loss_actor"].mean() + out["loss_alpha"].mean()).backward()
        if self.cfg.max_grad_norm < math.inf:
            for params in self.params.values():
                torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        for opt in self.optimizers.values():
            opt.step()
        self.loss.cap_alpha_()
        if reset:
            self.loss.reset_extreme_compositions(out["task_kept"])
        self.soft_update()
        return out.detach()

    @torch.no_grad()
    def soft_update(self) -> None:
        """``θ' ← τ θ + (1 - τ) θ'`` for the target critics (what ``target_updater.step()`` computes), in one foreach
        kernel instead of one per parameter."""
        torch._foreach_lerp_(self._targets, self._sources, self.cfg.tau)

    def state_dict(self) -> dict:
        return {"loss": self.loss.state_dict(), "updates": self.updates,
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.loss.load_state_dict(state["loss"])
        self.updates = state["updates"]
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])


def update_metrics(out: dict[str, torch.Tensor], task_names: list[str]) -> dict[str, float]:
    """Flat metrics row of one update: mean losses, and per task α, entropy, weight and mask-out flag."""
    row = {f"train/{k}": float(out[k].mean()) for k in ("loss_actor", "loss_qvalue", "loss_alpha")}
    row["train/tasks_kept"] = float(out["task_kept"].sum())
    for key in ("alpha", "entropy", "task_weight"):
        row.update({f"train/{name}/{key}": float(v) for name, v in zip(task_names, out[key].tolist())})
    return row


def eval_envs_per_task(cfg: Config) -> int:
    """Env instances per task of the evaluation env: the largest divisor of both ``eval_episodes`` and
    ``final_eval_episodes`` up to ``MAX_EVAL_ENVS_PER_TASK``, and up to ``MAX_EVAL_ENVS`` over all tasks (more
    episodes run in rounds on the same instances)."""
    common = math.gcd(cfg.eval_episodes, cfg.final_eval_episodes)
    cap = max(1, min(common, MAX_EVAL_ENVS_PER_TASK, MAX_EVAL_ENVS // get_suite(cfg.suite).num_tasks))
    return max(d for d in range(1, cap + 1) if common % d == 0)


def evaluate_episodes(env: MultiTaskEnv, policy, episodes: int) -> EvalResult:
    """``episodes`` deterministic episodes per task in rounds of ``env.num_envs_per_task`` (which divides it), on
    the same env instances: mean return, pooled std (``√(mean of var + mean²) - mean²``) and success rate."""
    per_round = env.num_envs_per_task
    if episodes % per_round:
        raise ValueError(f"episodes={episodes} is not a multiple of the {per_round} envs per task")
    rounds = [evaluate(env, policy) for _ in range(episodes // per_round)]
    mean = torch.tensor([r.return_mean for r in rounds]).mean(0)
    second = torch.tensor([[m * m + v * v for m, v in zip(r.return_mean, r.return_std)] for r in rounds]).mean(0)
    std = (second - mean * mean).clamp_min(0).sqrt()
    success = None
    if rounds[0].success_rate is not None:
        success = torch.tensor([r.success_rate for r in rounds]).mean(0).tolist()
    return EvalResult(rounds[0].task_names, mean.tolist(), std.tolist(), success)


def env_step(env: MultiTaskEnv, td: TensorDictBase, sac: MultiTaskSAC, replay: PerTaskReplayBuffer,
             returns: EpisodeReturns, reward_scale: float, random: bool) -> TensorDictBase:
    """One env step of all K tasks: act (uniform while ``random``), step (the batch crosses to the device once),
    store the transition with its reward scaled, add the reward to the episode returns; returns the next ``td``.
    No host read of the device."""
    sac.explore(td, random=random)
    transition, td = env.step_and_maybe_reset(td)
    stored = transition.select(*TRANSITION_KEYS)
    reward = stored.get(("next", "reward"))
    stored.set(("next", "reward"), reward * reward_scale)
    replay.extend(stored)
    returns.add(reward, transition.get(("next", "done")))
    return td


def _write_results(run: TrainingRun, cfg: Config, suite: Suite, summary: dict) -> None:
    """``results.md``, the report of this run (:func:`tdmt.tables.report_markdown`, as ``tdmt report``), and
    ``curves.png``."""
    rows = run.evals.rows()
    metric = "success" if suite.success_metric else "return"
    label = method_name("sac_mt", cfg)
    plot_curves({label: [rows]}, suite.task_names, run.dir / "curves.png", metric=metric,
                title=f"sac_mt {cfg.backbone} on {suite.name}, seed {cfg.seed}")
    text = (f"# sac_mt ({cfg.backbone}) on {suite.name}, seed {cfg.seed}\n\n"
            f"{summary['steps']} env steps per task, {summary['updates']} updates, "
            f"{summary['wall_time_s'] / 60:.1f} min. Evaluation: {cfg.eval_episodes} deterministic episodes per task "
            f"every {cfg.eval_every} steps, and the final policy over {cfg.final_eval_episodes} (CTPG Table 1: final; "
            "KTM-DRL Table 1: max average).\n\n"
            + tables.report_markdown({label: [rows]}, suite.task_names, suite.success_metric))
    write_text(run.dir / "results.md", text)


def _evaluate(run: TrainingRun, eval_env: MultiTaskEnv, sac: MultiTaskSAC, step: int, episodes: int) -> EvalResult:
    result = evaluate_episodes(eval_env, sac.act, episodes)
    run.evals.log(step, **result.as_row())
    return result


def run(cfg: Config) -> dict:
    """Train multi-task SAC on ``cfg.suite`` (resuming from ``cfg.run_dir`` if it holds a checkpoint)."""
    cfg.validate()
    cfg = dataclasses.replace(cfg, run_dir=cfg.resolved_run_dir())
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    suite = get_suite(cfg.suite)
    # the envs step on the CPU and hand their batch to cfg.device once; networks, replay and counters live there
    env = make_env(cfg.suite, seed=cfg.seed, device=cfg.device)
    eval_env = make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=eval_envs_per_task(cfg),
                        device=cfg.device)
    sac = MultiTaskSAC(cfg, suite)
    replay = PerTaskReplayBuffer(suite.num_tasks, cfg.replay_size_per_task(suite), cfg.batch_size_per_task,
                                 storage=cfg.storage, device=cfg.replay_on())
    buffers = {"replay": replay}
    run_ = TrainingRun(cfg.run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    first = run_.resume(sac.load_state_dict, buffers) + 1
    returns = EpisodeReturns(suite.num_tasks, sac.device)
    td = env.reset()
    start, last = time.time(), None
    with run_.guard(sac.state_dict, buffers) as guard:
        for step in tqdm(range(first, cfg.total_steps + 1), desc=f"sac_mt {cfg.backbone} {suite.name}",
                         initial=first - 1, total=cfg.total_steps, disable=not cfg.progress):
            td = env_step(env, td, sac, replay, returns, cfg.reward_scale, random=step <= cfg.exploration_steps)
            if step > cfg.exploration_steps:
                for _ in range(cfg.updates_per_step):
                    last = sac.update(replay.sample().to(sac.device, non_blocking=True), env_steps=step)
            if step % cfg.log_every == 0:  # the one read of the device per logging interval
                ended = {f"train/{suite.task_names[k]}/episode_return": r for k, r in returns.pop().items()}
                sps = (step - first + 1) / max(time.time() - start, 1e-9)
                run_.metrics.log(step, **(update_metrics(last, suite.task_names) if last is not None else {}),
                                 **ended, steps_per_s=sps)
            if step == cfg.total_steps:  # the final policy over final_eval_episodes (CTPG Table 1)
                _evaluate(run_, eval_env, sac, step, cfg.final_eval_episodes)
            elif cfg.eval_every and step % cfg.eval_every == 0:
                _evaluate(run_, eval_env, sac, step, cfg.eval_episodes)
            run_.maybe_checkpoint(step, sac.state_dict, buffers)
            guard.check(step)
    rows = run_.evals.rows()
    if not rows or int(float(rows[-1]["step"])) != cfg.total_steps:  # resumed past the end of the loop
        _evaluate(run_, eval_env, sac, cfg.total_steps, cfg.final_eval_episodes)
        rows = run_.evals.rows()
    summary = _summary(cfg, suite, rows, sac, time.time() - start, run_.resumed_from)
    _write_results(run_, cfg, suite, summary)
    run_.finish(summary)
    env.close()
    eval_env.close()
    return summary


def _summary(cfg: Config, suite: Suite, rows: list[dict], sac: MultiTaskSAC, wall: float,
             resumed_from: int | None) -> dict:
    summary = {"recipe": "sac_mt", "suite": suite.name, "backbone": cfg.backbone, "seed": cfg.seed,
               "steps": cfg.total_steps, "updates": sac.updates, "wall_time_s": wall, "resumed_from": resumed_from,
               "final_eval_episodes": cfg.final_eval_episodes,
               **eval_summary(rows, suite.task_names, suite.success_metric),
               "final_alpha": dict(zip(suite.task_names, sac.loss.alpha.tolist()))}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
