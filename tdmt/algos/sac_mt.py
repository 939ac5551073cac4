"""Recipe ``sac_mt``: multi-task SAC with per-task replay and action mask — the SAC-MT baseline of KTM-DRL
(Table 1) and the "Base" runs of CTPG (Table 1) for ``backbone=mtsac|mhsac|pcgrad|sm|paco``.

API summary
-----------
* ``Config``: the paper's hyper-parameters (CTPG App. F.3, DESIGN §6): Adam lr 1e-4 (actor, critic, α), batch
  128 per task (128·K), γ 0.99, τ 0.005, reward scale 0.1, 2000 exploration steps then 1 update per env step,
  2×400 (HalfCheetah) / 5×400 (Meta-World) networks (PaCo 3×400 and SM's own sizes on Meta-World), per-task α,
  mask-out (3000 after 100k steps), loss rescaling. ``hidden=()`` picks the paper's size for the suite.
* ``MultiTaskSAC(cfg, suite)``: networks + ``MultiTaskSACLoss`` + optimizers (PCGrad-wrapped for
  ``backbone=pcgrad``) + ``SoftUpdate``; ``update(batch) -> metrics``, ``explore(td, random=False)``,
  ``act(td)`` (the policy for ``evaluate``), ``state_dict()``/``load_state_dict()``. The CTPG recipe can reuse
  it for its control policies.
* ``run(cfg) -> summary``: the training loop (one env step of all K tasks = one "step"; ``total_steps`` is the
  sample budget per task), evaluation every ``eval_every`` steps, checkpoint/resume via ``TrainingRun``;
  writes metrics.csv, eval.csv, results.md, curves.png, summary.json in ``run_dir``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Literal

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate, ValueEstimators

from tdmt.algos.run import TrainingRun
from tdmt.data import PerTaskReplayBuffer
from tdmt.envs import Suite, action_masks, get_suite, list_suites, make_env
from tdmt.eval import EvalResult, eval_summary, evaluate
from tdmt.modules.backbones import make_sac_backbone
from tdmt.objectives.multitask_sac import MultiTaskSACLoss
from tdmt.optim import PCGrad
from tdmt.progress import tqdm
from tdmt.report import markdown_table, plot_curves, write_text

Backbone = Literal["mtsac", "mhsac", "pcgrad", "sm", "paco"]
TRANSITION_KEYS = ("observation", "task_id", "action", ("next", "observation"), ("next", "task_id"),
                   ("next", "reward"), ("next", "done"), ("next", "terminated"))


@dataclasses.dataclass
class Config:
    suite: str = "halfcheetah-mt5"
    seed: int = 0
    run_dir: str = ""
    backbone: Backbone = "mtsac"
    hidden: tuple[int, ...] = ()  # () = the paper's size for the suite and backbone (see paper_sizes)
    total_steps: int = 800_000  # env steps per task (CTPG: 0.8M HalfCheetah, 1.5M Meta-World)
    exploration_steps: int = 2000
    updates_per_step: int = 1
    batch_size_per_task: int = 128
    buffer_size_per_task: int = 1_000_000
    storage: Literal["memory", "memmap"] = "memory"
    lr: float = 1e-4
    gamma: float = 0.99
    tau: float = 0.005
    reward_scale: float = 0.1
    alpha_init: float = 1.0
    loss_rescaling: bool = True
    mask_out_threshold: float = 3000.0
    mask_out_start: int = 100_000
    eval_every: int = 10_000
    eval_episodes: int = 10
    log_every: int = 1000
    checkpoint_every: int = 50_000
    num_threads: int = 1
    device: str = "cpu"  # networks and updates ("cuda" on a GPU); envs and replay stay on the CPU

    def validate(self) -> None:
        if self.suite not in list_suites():
            raise ValueError(f"unknown suite {self.suite!r}; valid: {list_suites()}")
        for name in ("total_steps", "batch_size_per_task", "buffer_size_per_task", "eval_every", "eval_episodes",
                     "log_every", "num_threads", "updates_per_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.exploration_steps < 1:
            raise ValueError(f"exploration_steps must be >= 1 (updates need data), got {self.exploration_steps}")
        if not 0 < self.tau <= 1 or not 0 <= self.gamma <= 1:
            raise ValueError(f"need 0 < tau <= 1 and 0 <= gamma <= 1, got tau={self.tau}, gamma={self.gamma}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be >= 1, got {self.hidden}")

    def resolved_run_dir(self) -> str:
        """``run_dir``, or ``runs/sac_mt/<backbone>/<suite>/seed<seed>`` when empty."""
        return self.run_dir or f"runs/sac_mt/{self.backbone}/{self.suite}/seed{self.seed}"


def paper_sizes(suite: str, backbone: str, hidden: tuple[int, ...] = ()) -> tuple[tuple[int, ...], dict]:
    """Hidden sizes and backbone options of CTPG App. F.3 (Tables 4–8) for ``suite``; ``hidden`` overrides."""
    metaworld = suite.startswith("metaworld")
    if backbone == "sm":
        default, options = ((400, 400), {"module_size": 128}) if metaworld else ((400,), {"module_size": 64})
    elif backbone == "paco":
        default, options = (400,) * (3 if metaworld else 2), {}
    else:
        default, options = (400,) * (5 if metaworld else 2), {}
    return (tuple(hidden) or default), options


class MultiTaskSAC:
    """Networks, ``MultiTaskSACLoss``, optimizers and target updates of one multi-task SAC learner."""

    def __init__(self, cfg: Config, suite: Suite):
        self.cfg, self.suite = cfg, suite
        self.device = torch.device(cfg.device)
        hidden, options = paper_sizes(suite.name, cfg.backbone, cfg.hidden)
        backbone = make_sac_backbone(cfg.backbone, num_tasks=suite.num_tasks, obs_dim=suite.obs_max,
                                     act_dim=suite.act_max, hidden=hidden, **options)
        self.actor = backbone.actor.to(self.device)
        self.mask = action_masks(suite.act_dims, suite.act_max).to(self.device)
        self.loss = MultiTaskSACLoss(self.actor, backbone.qvalue.to(self.device), action_mask=self.mask,
                                     alpha_init=cfg.alpha_init, mask_out_threshold=cfg.mask_out_threshold,
                                     mask_out_start=cfg.mask_out_start, loss_rescaling=cfg.loss_rescaling)
        self.loss.make_value_estimator(ValueEstimators.TD0, gamma=cfg.gamma)
        self.target_updater = SoftUpdate(self.loss, tau=cfg.tau)
        actor_opt = torch.optim.Adam(list(self.loss.actor_network_params.values(True, True)), lr=cfg.lr)
        critic_opt = torch.optim.Adam(list(self.loss.qvalue_network_params.values(True, True)), lr=cfg.lr)
        self.pcgrad = cfg.backbone == "pcgrad"
        if self.pcgrad:  # "mean" so that without conflicts the step equals the plain mean loss's
            actor_opt, critic_opt = PCGrad(actor_opt, reduction="mean"), PCGrad(critic_opt, reduction="mean")
        self.optimizers = {"actor": actor_opt, "critic": critic_opt,
                           "alpha": torch.optim.Adam([self.loss.log_alpha], lr=cfg.lr)}
        self.updates = 0

    def act(self, td: TensorDictBase) -> TensorDictBase:
        """Write ``action`` ~ π (in the current exploration mode) into the env's ``td``, computed on ``device``."""
        with torch.no_grad():
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
        """One SAC update on a ``[K, N]`` batch: critics, actor, temperatures, then the soft target update."""
        self.loss.set_env_steps(env_steps)
        out = self.loss(batch)
        for opt in self.optimizers.values():
            opt.zero_grad()
        if self.pcgrad:
            self.optimizers["critic"].backward(out["loss_qvalue"])
            self.optimizers["actor"].backward(out["loss_actor"])
            out["loss_alpha"].mean().backward()
        else:
            (out["loss_qvalue"].mean() + out["loss_actor"].mean() + out["loss_alpha"].mean()).backward()
        for opt in self.optimizers.values():
            opt.step()
        self.target_updater.step()
        self.updates += 1
        return {key: value.detach() for key, value in out.items()}

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


def _write_results(run: TrainingRun, cfg: Config, suite: Suite, summary: dict) -> None:
    rows = run.evals.rows()
    metric = "success" if suite.success_metric else "return"
    plot_curves({f"SAC-MT ({cfg.backbone})": [rows]}, suite.task_names, run.dir / "curves.png", metric=metric,
                title=f"sac_mt {cfg.backbone} on {suite.name}, seed {cfg.seed}")
    header = ["task", "final return", "max average return"] + (["final success"] if suite.success_metric else [])
    table = []
    for name in suite.task_names:
        values = [float(r[f"eval/{name}/return"]) for r in rows]
        line = [name, values[-1], max(values)]
        if suite.success_metric:
            line.append(float(rows[-1][f"eval/{name}/success"]))
        table.append(line)
    text = (f"# sac_mt ({cfg.backbone}) on {suite.name}, seed {cfg.seed}\n\n"
            f"{summary['steps']} env steps per task, {summary['updates']} updates, "
            f"{summary['wall_time_s'] / 60:.1f} min. Evaluation: {cfg.eval_episodes} deterministic episodes per task "
            f"every {cfg.eval_every} steps.\n\n" + markdown_table(header, table))
    write_text(run.dir / "results.md", text)


def _evaluate(run: TrainingRun, eval_env, sac: MultiTaskSAC, step: int) -> EvalResult:
    result = evaluate(eval_env, sac.act)
    run.evals.log(step, **result.as_row())
    return result


def run(cfg: Config) -> dict:
    """Train multi-task SAC on ``cfg.suite`` (resuming from ``cfg.run_dir`` if it holds a checkpoint)."""
    cfg.validate()
    cfg = dataclasses.replace(cfg, run_dir=cfg.resolved_run_dir())
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    suite = get_suite(cfg.suite)
    env = make_env(cfg.suite, seed=cfg.seed)  # envs and replay stay on the CPU; networks live on cfg.device
    eval_env = make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=cfg.eval_episodes)
    sac = MultiTaskSAC(cfg, suite)
    replay = PerTaskReplayBuffer(suite.num_tasks, cfg.buffer_size_per_task, cfg.batch_size_per_task,
                                 storage=cfg.storage)
    buffers = {"replay": replay}
    run_ = TrainingRun(cfg.run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    first = run_.resume(sac.load_state_dict, buffers) + 1
    episode_return = torch.zeros(suite.num_tasks)
    td = env.reset()
    start, last = time.time(), None
    with run_.guard(sac.state_dict, buffers) as guard:
        for step in tqdm(range(first, cfg.total_steps + 1), desc=f"sac_mt {cfg.backbone} {suite.name}",
                         initial=first - 1, total=cfg.total_steps, disable=None):
            sac.explore(td, random=step <= cfg.exploration_steps)
            transition, td = env.step_and_maybe_reset(td)
            stored = transition.select(*TRANSITION_KEYS)
            reward = stored.get(("next", "reward"))
            stored.set(("next", "reward"), reward * cfg.reward_scale)
            replay.extend(stored)
            episode_return += reward.squeeze(-1)
            done = transition.get(("next", "done")).squeeze(-1)
            if done.any():
                run_.metrics.log(step, **{f"train/{suite.task_names[k]}/episode_return": float(episode_return[k])
                                          for k in done.nonzero().flatten().tolist()})
                episode_return[done] = 0.0
            if step > cfg.exploration_steps:
                for _ in range(cfg.updates_per_step):
                    last = sac.update(replay.sample().to(sac.device), env_steps=step)
            if step % cfg.log_every == 0 and last is not None:
                sps = (step - first + 1) / max(time.time() - start, 1e-9)
                run_.metrics.log(step, **update_metrics(last, suite.task_names), steps_per_s=sps)
            if step % cfg.eval_every == 0:
                _evaluate(run_, eval_env, sac, step)
            run_.maybe_checkpoint(step, sac.state_dict, buffers)
            guard.check(step)
    rows = run_.evals.rows()
    if not rows or int(float(rows[-1]["step"])) != cfg.total_steps:
        _evaluate(run_, eval_env, sac, cfg.total_steps)
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
               **eval_summary(rows, suite.task_names, suite.success_metric),
               "final_alpha": dict(zip(suite.task_names, sac.loss.alpha.tolist()))}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
