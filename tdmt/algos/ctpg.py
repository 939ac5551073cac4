"""Recipe ``ctpg``: Cross-Task Policy Guidance (He et al., NeurIPS 2024, Alg. 3) on any multi-task SAC backbone,
with the QMP baseline, a random-guide ablation and the paper's ablations (DESIGN §6).

API summary
-----------
* ``Config``: ``sac_mt.Config`` (control policies: backbone, paper hyper-parameters, the public code's settings)
  plus the guide: ``guide=ctpg|qmp|random|none`` (``none`` = the backbone's "Base" run, ``random`` = a uniform
  choice every H steps), ``guide_step`` H (10), ``policy_filter`` (on), ``filter_start`` (10k env steps),
  ``mc_samples`` M (5), ``guide_block=temperature|success|none`` (Eq. 14, or eval success rate above
  ``block_success_threshold`` = 0.8, the public code's), ``hindsight`` (on), ``guide_lr`` (1e-4), ``guide_hidden``
  (() = multi-head 2×400 HalfCheetah / 5×400 Meta-World, App. F.3 Table 10), ``guide_batch=spread|per_task``.
* ``SACControlPolicies(loss)``: the :class:`tdmt.collect.ControlPolicies` view of a ``MultiTaskSACLoss``.
* ``GuideLearner(cfg, suite, policies)``: guide networks + ``GuideDiscreteSACLoss`` + Adam + ``SoftUpdate``;
  ``choose(observation, own, blocked, filter_on)`` (guided behaviour draw), ``update(batch)`` (unblocked rows).
* ``run(cfg) -> summary``: one env step of all K tasks per "step"; control update every step after
  ``exploration_steps``; every H steps one guide update (hindsight relabel → comparable-entropy bonus → loss);
  evaluation (mean return; success rate on Meta-World) every ``eval_every`` over ``eval_episodes``, and of the
  final policy over ``final_eval_episodes`` (100: CTPG Table 1); checkpoint/resume via ``TrainingRun``; writes
  metrics.csv, eval.csv, results.md (CTPG Table 1 layout, the final evaluation), curves.png, summary.json (with
  ``choice_share[i][j]``, the share of task i's behaviour draws that picked π_j).

Behaviour (Eq. 7–8, 11–12, 14): each task row keeps its behaviour policy j for H steps (a new draw at every block
start and at each episode start). ``ctpg``: ``j ~ π^g_i(·|s)`` with logits of filtered-out policies at ``-inf``
(own policy if all are filtered), blocked tasks always use their own policy. ``random``: ``j`` uniform over the K
policies, the same guide-block gate, no filter, no guide learning. ``qmp``: ``j = argmax_j min Q_i(s, a_j)``,
``a_j ~ π_j``, and the winning ``a_j`` itself is executed at that step (then ``π_j`` for the rest of the block).
Guide transitions go to a per-task guide replay; in the guide losses only the unblocked tasks count, ``128·K``
transitions spread evenly over them (the public code's ``guide_sample_scale``; ``guide_batch=per_task``: 128 each),
in a batch of one fixed shape (:func:`guide_batch`).

Device (DESIGN §9): everything but the env lives on ``device=`` — networks, optimiser states, targets, temperatures,
the gates' state, both replays (on ``replay_device=`` if set), the behaviour state and the episode accumulators.
Between logging intervals no env step, draw, control update or guide update reads the device: finished guide blocks
are stored with a mask (``PerTaskReplayBuffer.extend_where``), on CUDA the behaviour draw runs at every step and the
rows starting a block take it, statistics stay tensors until :meth:`Trainer.metrics` reads them at a log step.
``guide_block=success`` decides "every task blocked" (no guide update) from the last evaluation, already on the host.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import ClassVar, Literal

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate, ValueEstimators

from tdmt import tables
from tdmt.algos import sac_mt
from tdmt.algos.run import TrainingRun
from tdmt.collect import (
    GuidedBehaviour,
    guide_block,
    hindsight_relabel,
    hindsight_scores,
    masked_guide_sample,
    own_entropy_bonus,
    policy_filter_mask,
    qmp_choice,
    state_value,
)
from tdmt.collect.returns import EpisodeReturns
from tdmt.data import PerTaskReplayBuffer
from tdmt.device import autocast, resolve_device, speed_wrap
from tdmt.envs import MultiTaskEnv, Suite, get_suite, make_env
from tdmt.eval import eval_summary
from tdmt.objectives import GuideDiscreteSACLoss
from tdmt.objectives.guide_sac import make_guide_networks
from tdmt.objectives.multitask_sac import MultiTaskSACLoss
from tdmt.progress import tqdm
from tdmt.report import markdown_table, method_name, plot_curves, write_text

Guide = Literal["ctpg", "qmp", "random", "none"]
BlockMode = Literal["temperature", "success", "none"]  # not "off": YAML reads `off` as false
BACKBONE_COLUMNS = {"mtsac": "MTSAC", "mhsac": "MHSAC", "pcgrad": "PCGrad", "sm": "SM", "paco": "PaCo"}
GUIDE_ROWS = {"none": "Base", "qmp": "w/ QMP", "ctpg": "w/ CTPG", "random": "w/ random guide"}


@dataclasses.dataclass
class Config(sac_mt.Config):
    """ctpg: CTPG guide policy (or QMP, a random guide, none) on a multi-task SAC backbone; CTPG App. F.3 defaults."""

    guide: Guide = "ctpg"  # ctpg | qmp | random (uniform every H steps: ablation) | none (the backbone's Base run)
    guide_step: int = 10  # H: env steps per behaviour-policy choice (App. F.3 Table 10)
    policy_filter: bool = True  # policy-filter gate (Eq. 11)
    filter_start: int = 10_000  # env steps before the policy filter acts (public code: no_compare_step 10000)
    mc_samples: int = 5  # M: Monte-Carlo samples of the filter's state value (App. F.3)
    guide_block: BlockMode = "temperature"  # guide-block gate: temperature (Eq. 14), success rate, none
    block_success_threshold: float = 0.8  # guide_block=success: block tasks above this eval success (public code)
    hindsight: bool = True  # hindsight relabel of the guide's actions (Eq. 9)
    guide_lr: float = 1e-4  # Adam learning rate of guide actor, critics and temperature (App. F.3)
    guide_hidden: tuple[int, ...] = ()  # guide hidden sizes; () = 2x400 (HalfCheetah) / 5x400 (Meta-World)
    guide_batch: Literal["spread", "per_task"] = "spread"  # spread: 128*K over unblocked tasks (public code)

    RANGES: ClassVar[dict[str, str]] = {
        "guide_step": ">= 1", "filter_start": ">= 0", "mc_samples": ">= 1", "block_success_threshold": "[0, 1]",
        "guide_hidden": "sizes >= 1",
    }

    def validate(self) -> None:
        super().validate()
        if self.guide_block == "success" and not get_suite(self.suite).success_metric:
            raise ValueError(f"guide_block='success' needs a suite with a success metric; {self.suite!r} has none "
                             "(valid: 'temperature', 'none')")


class SACControlPolicies:
    """:class:`tdmt.collect.ControlPolicies` over a ``MultiTaskSACLoss`` ("act as task j" = overwrite ``task_id``)."""

    def __init__(self, loss: MultiTaskSACLoss):
        self.loss, self.num_tasks = loss, loss.num_tasks

    @staticmethod
    def _td(observation: torch.Tensor, own: torch.Tensor) -> TensorDictBase:
        return TensorDict({"observation": observation, "task_id": own}, batch_size=own.shape)

    @torch.no_grad()
    def sample(self, observation: torch.Tensor, own: torch.Tensor, policy: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss.sample_log_prob(self._td(observation, own), policy_task_id=policy)

    @torch.no_grad()
    def candidate_log_probs(self, observation: torch.Tensor, action: torch.Tensor, own: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss.candidate_log_probs(self._td(observation, own), action)

    @torch.no_grad()
    def min_q(self, observation: torch.Tensor, action: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        return self.loss.min_q(self._td(observation, own), action)

    def log_alpha(self) -> torch.Tensor:
        return self.loss.log_alpha.detach()


class GuideLearner:
    """The guide policy of every task: networks, loss, optimizer, target updates, behaviour draws and updates."""

    def __init__(self, cfg: Config, suite: Suite, policies: SACControlPolicies):
        self.cfg, self.suite, self.policies = cfg, suite, policies
        hidden = cfg.guide_hidden or sac_mt.paper_sizes(suite.name, "mhsac")[0]
        actor, qvalue, comp_qvalue = make_guide_networks(suite.num_tasks, suite.obs_max, hidden)
        self.device = resolve_device(cfg.device)
        self.loss = GuideDiscreteSACLoss(actor, qvalue, comp_qvalue, num_tasks=suite.num_tasks,
                                         alpha_init=cfg.alpha_init, alpha_loss=cfg.alpha_loss).to(self.device)
        self.loss.make_value_estimator(ValueEstimators.TD0, gamma=cfg.gamma)
        self.target_updater = SoftUpdate(self.loss, tau=cfg.tau)  # registers the targets with TorchRL
        self.optimizer = sac_mt.adam(list(self.loss.parameters()), cfg.guide_lr, capturable=cfg.cudagraphs)
        # the public code clips each component's gradient on its own (guide critics, actor, temperature)
        self.clip_groups = [[*self.loss.qvalue_network_params.values(True, True),
                             *self.loss.comp_qvalue_network_params.values(True, True)],
                            list(self.loss.actor_network_params.values(True, True)), [self.loss.log_alpha]]
        self._sources = self.clip_groups[0]
        self._targets = [*self.loss.target_qvalue_network_params.values(True, True),
                         *self.loss.target_comp_qvalue_network_params.values(True, True)]
        self._step = speed_wrap(self._update_step, compile=cfg.compile, cudagraphs=cfg.cudagraphs,
                                device=self.device)
        self.updates = 0

    @torch.no_grad()
    def choose(self, observation: torch.Tensor, own: torch.Tensor, blocked: torch.Tensor, filter_on: bool
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Behaviour policy per row (flat ``[K·E]`` rows in task-major order) and draw statistics (tensors)."""
        K = self.suite.num_tasks
        obs = observation.view(K, -1, observation.shape[-1])
        td = TensorDict({"observation": obs, "task_id": own.view(K, -1)}, batch_size=obs.shape[:2])
        logits = self.loss.guide_logits(td).reshape(-1, K)
        mask = torch.ones_like(logits, dtype=torch.bool)
        if filter_on:
            q_comp = self.loss.comparable_q(td).reshape(-1, K)
            v_own = state_value(self.policies, obs, own.view(K, -1), self.cfg.mc_samples).reshape(-1)
            mask = policy_filter_mask(q_comp, v_own)
        choice = masked_guide_sample(logits, mask, own)
        choice = torch.where(blocked[own], own, choice)
        return choice, {"guide/filter_pass": mask.float().mean(), "guide/all_filtered": (~mask.any(-1)).float().mean()}

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """Hindsight relabel, comparable-entropy bonus, one guide SAC step (gradients clipped to ``max_grad_norm``,
        α^g capped at ``alpha_max``: the public code), soft target update. ``batch`` is ``[T, N]`` with one task per
        row, rows weighted by ``active`` (:func:`guide_batch`: blocked tasks weigh nothing). Returns statistics as
        tensors on the device (read them at logging intervals)."""
        out = self._step(batch)
        self.updates += 1
        return {f"guide/{k}": v for k, v in out.items()}

    def _update_step(self, batch: TensorDictBase) -> TensorDictBase:
        """The update itself (what ``compile``/``cudagraphs`` wrap): tensors in, tensors out, no host read."""
        active = batch.get("active", None)
        weight = torch.ones(batch.shape, device=self.device) if active is None else active.to(torch.float32)
        with torch.no_grad():
            relabelled, own_log_prob = torch.zeros((), device=self.device), None
            if self.cfg.hindsight:
                scores = hindsight_scores(self.policies, batch["seq_observation"], batch["seq_action"],
                                          batch["task_id"])
                new = hindsight_relabel(scores.log_probs, batch["seq_valid"])
                relabelled = ((new != batch["action"]).float() * weight).sum() / weight.sum().clamp_min(1e-12)
                batch.set("action", new)
                own_log_prob = scores.own_sample_log_prob
            batch.set("own_entropy_bonus", own_entropy_bonus(self.policies, batch["seq_observation"],
                                                             batch["seq_valid"], batch["task_id"], self.cfg.gamma,
                                                             own_log_prob))
        with autocast(self.device, self.cfg.precision):
            out = self.loss(batch)
        self.optimizer.zero_grad()
        (out["loss_qvalue"] + out["loss_comp_qvalue"] + out["loss_actor"] + out["loss_alpha"]).backward()
        if self.cfg.max_grad_norm < math.inf:
            for params in self.clip_groups:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            if self.cfg.alpha_max < math.inf:
                self.loss.log_alpha.clamp_(max=math.log(self.cfg.alpha_max))
            # θ' ← τ θ + (1 - τ) θ' (what target_updater.step() computes) in one foreach kernel
            torch._foreach_lerp_(self._targets, self._sources, self.cfg.tau)
        keys = ("loss_qvalue", "loss_comp_qvalue", "loss_actor", "loss_alpha", "guide_entropy")
        row = out.select(*keys).detach()
        row["relabelled"] = relabelled
        per_task = torch.zeros(self.suite.num_tasks, device=self.device).index_add(0, batch["task_id"][:, 0],
                                                                                  weight.sum(-1))
        row["active_tasks"] = (per_task > 0).float().sum()  # the unblocked tasks that trained the guide
        return row

    def state_dict(self) -> dict:
        return {"loss": self.loss.state_dict(), "optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]


def _own_policy(observation: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    return own


class CTPGAgent:
    """Control learner (``sac_mt.MultiTaskSAC``), guide learner, gates and the guided behaviour of one run."""

    def __init__(self, cfg: Config, suite: Suite, num_envs_per_task: int = 1):
        self.cfg, self.suite = cfg, suite
        self.sac = sac_mt.MultiTaskSAC(cfg, suite)
        self.policies = SACControlPolicies(self.sac.loss)
        self.guide = GuideLearner(cfg, suite, self.policies) if cfg.guide == "ctpg" else None
        own = torch.arange(suite.num_tasks, device=self.sac.device).repeat_interleave(num_envs_per_task)
        self.behaviour = GuidedBehaviour(own, suite.obs_max, suite.act_max, cfg.guide_step, cfg.gamma)
        self.last_success = torch.zeros(suite.num_tasks, device=self.sac.device)
        self._every_task_succeeds = False  # last_success > threshold for every task, kept on the host
        # choice_counts[i, j]: behaviour draws of task i that picked π_j (block starts after the random phase)
        self.choice_counts = torch.zeros(suite.num_tasks, suite.num_tasks, device=self.sac.device)
        self.env_steps = 0
        self.stats: dict[str, torch.Tensor] = {}  # of the latest draw, as tensors (read at logging intervals)
        self._proposal: torch.Tensor | None = None  # QMP: the winning proposals a_j* of the last draw

    def set_success(self, success_rate: list[float]) -> None:
        """The latest evaluation's success rate per task (the ``guide_block=success`` gate)."""
        self.last_success = torch.tensor(success_rate, device=self.last_success.device)
        self._every_task_succeeds = all(s > self.cfg.block_success_threshold for s in success_rate)

    def all_blocked(self) -> bool:
        """Whether the guide-block gate blocks every task (then there is no guide update), answered on the host:
        only ``guide_block=success`` can block them all (Eq. 14 cannot: not every ``log α_i`` exceeds the mean),
        and its input is the last evaluation, read on the host already (:meth:`set_success`)."""
        return self.cfg.guide_block == "success" and self._every_task_succeeds

    def blocked(self) -> torch.Tensor:
        """``[K]`` tasks that use no guidance now (guide-block gate)."""
        if self.cfg.guide_block == "temperature":
            return guide_block(self.sac.loss.log_alpha.detach())
        if self.cfg.guide_block == "success":
            return self.last_success > self.cfg.block_success_threshold
        return torch.zeros(self.suite.num_tasks, dtype=torch.bool, device=self.last_success.device)

    def _chooser(self, observation: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        if self.cfg.guide == "qmp":
            choice, self._proposal = qmp_choice(self.policies, observation, own)
            return choice
        blocked = self.blocked()
        if self.cfg.guide == "random":  # the ablation: uniform over the K policies, same guide-block gate
            self.stats["guide/blocked_tasks"] = blocked.sum()
            uniform = torch.randint(self.suite.num_tasks, own.shape, device=own.device)
            return torch.where(blocked[own], own, uniform)
        choice, self.stats = self.guide.choose(observation, own, blocked,
                                               self.cfg.policy_filter and self.env_steps >= self.cfg.filter_start)
        self.stats["guide/blocked_tasks"] = blocked.sum()
        return choice

    @torch.no_grad()
    def act(self, td: TensorDictBase, random: bool) -> TensorDictBase:
        """Write ``action`` for every env row: uniform while ``random``, else ``a ~ π_j`` with the behaviour j
        (QMP: at a block start, the winning proposal ``a_j`` itself)."""
        if self.cfg.guide == "none":
            return self.sac.explore(td, random=random)
        own = td.get("task_id")
        obs = td.get("observation").reshape(own.numel(), -1)
        start = self.behaviour.block_start.view(own.shape)  # rows that draw their behaviour policy now
        self._proposal = None
        choice = self.behaviour.choose(obs, _own_policy if random else self._chooser).view(own.shape)
        if random:
            return self.sac.explore(td, random=True)
        self.choice_counts.index_put_((own.flatten(), choice.flatten()), start.flatten().float(), accumulate=True)
        self.stats["guide/other_policy"] = (choice != own).float().mean()
        acting = td.select("observation").set("task_id", choice)
        with set_exploration_type(ExplorationType.RANDOM):
            action = self.sac.actor(acting).get("action")
        if self._proposal is not None:  # QMP executes the winning proposal at the step it was chosen
            action = torch.where(start.unsqueeze(-1), self._proposal.view_as(action), action)
        return td.set("action", action * self.sac.mask[own])

    def record(self, transition: TensorDictBase, reward_scale: float) -> tuple[TensorDictBase, torch.Tensor]:
        """Feed one env step to the block logic; returns every row's guide transition (scaled rewards) and the mask
        of the rows whose block ended (the ones to store)."""
        n = transition.numel()
        nxt = transition.get("next")
        return self.behaviour.record(
            transition.get("observation").reshape(n, -1), transition.get("action").reshape(n, -1),
            nxt.get("reward").reshape(n) * reward_scale, nxt.get("observation").reshape(n, -1),
            nxt.get("done").reshape(n), nxt.get("terminated").reshape(n))

    def state_dict(self) -> dict:
        state = {"sac": self.sac.state_dict(), "last_success": self.last_success, "choice_counts": self.choice_counts}
        if self.guide is not None:
            state["guide"] = self.guide.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.sac.load_state_dict(state["sac"])
        self.last_success.copy_(state["last_success"])  # into this run's device (checkpoints load on the CPU)
        self._every_task_succeeds = bool((state["last_success"] > self.cfg.block_success_threshold).all())
        self.choice_counts.copy_(state["choice_counts"])
        if self.guide is not None:
            self.guide.load_state_dict(state["guide"])


def _results_table(cfg: Config, suite: Suite, value: float) -> str:
    """CTPG Table 1 layout (rows: suite × Base / w/ QMP / w/ CTPG; columns: backbones); this run fills one cell."""
    header = ["Environment", "Method", *BACKBONE_COLUMNS.values()]
    rows = []
    for guide, label in GUIDE_ROWS.items():
        cells = ["" for _ in BACKBONE_COLUMNS]
        if guide == cfg.guide:
            cells[list(BACKBONE_COLUMNS).index(cfg.backbone)] = value
        rows.append([suite.name if guide == "none" else "", label, *cells])
    return markdown_table(header, rows)


def _write_results(run: TrainingRun, cfg: Config, suite: Suite, summary: dict) -> None:
    """``results.md``: this run's cell of CTPG Table 1 (:func:`tdmt.tables.mean_score`, as ``tdmt report
    --paper ctpg-table1``), then the report of this run (:func:`tdmt.tables.report_markdown`, as ``tdmt report``);
    ``curves.png``."""
    rows = run.evals.rows()
    metric = "success" if suite.success_metric else "return"
    label = method_name("ctpg", cfg)
    plot_curves({label: [rows]}, suite.task_names, run.dir / "curves.png", metric=metric,
                title=f"ctpg: {label} on {suite.name}, seed {cfg.seed}")
    if suite.success_metric:
        value, unit = tables.mean_score(rows, suite.task_names, "success_rate"), "mean success rate (%)"
    else:
        value, unit = tables.mean_score(rows, suite.task_names, "final_return") / 1e3, "mean episode return (×1e3)"
    text = (f"# ctpg: {label} on {suite.name}, seed {cfg.seed}\n\n"
            f"{summary['steps']} env steps per task, guide step H={cfg.guide_step}, policy filter "
            f"{'on' if cfg.policy_filter else 'off'}, guide block {cfg.guide_block}, hindsight "
            f"{'on' if cfg.hindsight else 'off'}; {summary['wall_time_s'] / 3600:.2f} h.\n\n"
            f"Final policy's {unit} over {cfg.final_eval_episodes} deterministic episodes per task (CTPG Table 1: "
            "the final policy, 100 episodes per task; "
            "`tdmt report` fills the other cells across a sweep):\n\n" + _results_table(cfg, suite, value)
            + "\n## Report of this run\n\n"
            + tables.report_markdown({label: [rows]}, suite.task_names, suite.success_metric))
    write_text(run.dir / "results.md", text)


def _evaluate(run: TrainingRun, eval_env: MultiTaskEnv, agent: CTPGAgent, step: int, episodes: int) -> None:
    result = sac_mt.evaluate_episodes(eval_env, agent.sac.actor, episodes)
    if result.success_rate is not None:
        agent.set_success(result.success_rate)
    run.evals.log(step, **result.as_row())


def guide_batch(replay: PerTaskReplayBuffer, blocked: torch.Tensor, spread: bool) -> TensorDictBase:
    """The guide's training batch, ``[K, N]`` whatever the gate blocks (a fixed shape: no host read, and a CUDA graph
    can replay it), one task per row, rows weighted by ``active`` so that blocked tasks weigh nothing.

    ``spread`` (the public code's ``guide_sample_scale``: ``N·K`` transitions spread evenly over the T unblocked
    tasks): row r draws from the ``(r mod T)``-th unblocked task, and each row weighs ``1 / (rows of its task)``, so
    every unblocked task weighs the same in the losses — the public code's ``N·K/T`` each, in expectation — and the
    rows still hold ``N·K`` transitions. Otherwise (``per_task``) row k draws ``N`` of task k, weighted by
    ``~blocked[k]``.
    """
    K, device = replay.num_tasks, replay.device
    blocked = blocked.to(device)
    if spread:
        unblocked_first = torch.argsort(blocked.to(torch.uint8), stable=True)
        T = (~blocked).sum().clamp_min(1)
        tasks = unblocked_first[torch.arange(K, device=device) % T]
        rows = torch.zeros(K, device=device).index_add(0, tasks, torch.ones(K, device=device))
        weight = (~blocked[tasks]).float() / rows[tasks]
    else:
        tasks, weight = torch.arange(K, device=device), (~blocked).float()
    batch = replay.sample(tasks=tasks)
    batch.set("active", weight.unsqueeze(-1).expand(batch.shape).clone())
    return batch


class Trainer:
    """Env, replays and agent of one run; :meth:`step` is one env step of every task plus the updates it triggers.

    ``suite`` may be a ``Suite`` object (e.g. a task subset) instead of ``cfg.suite``'s.
    """

    def __init__(self, cfg: Config, suite: Suite | None = None):
        self.cfg = cfg
        self.suite = suite or get_suite(cfg.suite)
        self.env = MultiTaskEnv(self.suite, seed=cfg.seed, device=cfg.device)
        self.agent = CTPGAgent(cfg, self.suite)
        K = self.suite.num_tasks
        capacity = cfg.replay_size_per_task(self.suite)
        replay_device = cfg.replay_on()
        self.replay = PerTaskReplayBuffer(K, capacity, cfg.batch_size_per_task, storage=cfg.storage,
                                          device=replay_device)
        self.buffers = {"replay": self.replay}
        self.guide_replay = None
        if self.agent.guide is not None:  # one guide transition per H env steps
            self.guide_replay = PerTaskReplayBuffer(K, max(1, capacity // cfg.guide_step), cfg.batch_size_per_task,
                                                  storage=cfg.storage, device=replay_device)
            self.buffers["guide_replay"] = self.guide_replay
        self.returns = EpisodeReturns(K, self.agent.sac.device)
        self.td = self.env.reset()
        self.last: dict[str, torch.Tensor] | None = None
        self.guide_row: dict[str, torch.Tensor] = {}

    def step(self, step: int) -> None:
        """Env step ``step`` (1-based) of all tasks, storage, control update and (every H) guide update; no host read
        of the device (training-episode returns accumulate in :attr:`returns`, read at logging intervals)."""
        cfg, agent = self.cfg, self.agent
        agent.env_steps = step
        agent.act(self.td, random=step <= cfg.exploration_steps)
        transition, self.td = self.env.step_and_maybe_reset(self.td)
        stored = transition.select(*sac_mt.TRANSITION_KEYS)
        reward = stored.get(("next", "reward"))
        stored.set(("next", "reward"), reward * cfg.reward_scale)
        self.replay.extend(stored)
        if cfg.guide != "none":  # block timing (QMP too); only CTPG trains on the guide transitions
            guide_transitions, ended = agent.record(transition, cfg.reward_scale)
            if self.guide_replay is not None:
                self.guide_replay.extend_where(guide_transitions, ended)
        self.returns.add(reward, transition.get(("next", "done")))
        if step > cfg.exploration_steps:
            for _ in range(cfg.updates_per_step):
                self.last = agent.sac.update(self.replay.sample().to(agent.sac.device, non_blocking=True),
                                             env_steps=step)
            # every row's first block has ended by step H, so from then on every task has a guide transition
            if (agent.guide is not None and step % cfg.guide_step == 0 and step >= cfg.guide_step
                    and not agent.all_blocked()):
                batch = guide_batch(self.guide_replay, agent.blocked(), cfg.guide_batch == "spread")
                self.guide_row = agent.guide.update(batch.to(agent.sac.device, non_blocking=True))

    def metrics(self) -> dict[str, float]:
        """Latest control-update, guide-update and behaviour statistics (empty before the first update); reads the
        device once."""
        if self.last is None:
            return {}
        stats = {**self.guide_row, **self.agent.stats}
        values = torch.stack([v.float() for v in stats.values()]).tolist() if stats else []
        return {**sac_mt.update_metrics(self.last, self.suite.task_names), **dict(zip(stats, values))}

    def close(self) -> None:
        self.env.close()


def run(cfg: Config) -> dict:
    """Train ``cfg.backbone`` with ``cfg.guide`` guidance on ``cfg.suite`` (resumes from ``cfg.run_dir``)."""
    cfg.validate()
    cfg = dataclasses.replace(cfg, run_dir=cfg.resolved_run_dir())
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    trainer = Trainer(cfg)
    suite, agent = trainer.suite, trainer.agent
    eval_env = make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=sac_mt.eval_envs_per_task(cfg),
                        device=cfg.device)
    run_ = TrainingRun(cfg.run_dir, cfg, checkpoint_every=cfg.checkpoint_every)
    start_step = run_.resume(agent.load_state_dict, trainer.buffers)
    start = time.time()
    with run_.guard(agent.state_dict, trainer.buffers) as guard:
        for step in tqdm(range(start_step + 1, cfg.total_steps + 1), desc=f"ctpg {cfg.guide} {cfg.backbone} "
                         f"{suite.name}", initial=start_step, total=cfg.total_steps, disable=not cfg.progress):
            trainer.step(step)
            if step % cfg.log_every == 0:  # the one read of the device per logging interval
                ended = {f"train/{suite.task_names[k]}/episode_return": r for k, r in trainer.returns.pop().items()}
                sps = (step - start_step) / max(time.time() - start, 1e-9)
                run_.metrics.log(step, **trainer.metrics(), **ended, steps_per_s=sps)
            if step == cfg.total_steps:  # the final policy over final_eval_episodes (CTPG Table 1)
                _evaluate(run_, eval_env, agent, step, cfg.final_eval_episodes)
            elif cfg.eval_every and step % cfg.eval_every == 0:
                _evaluate(run_, eval_env, agent, step, cfg.eval_episodes)
            run_.maybe_checkpoint(step, agent.state_dict, trainer.buffers)
            guard.check(step)
    rows = run_.evals.rows()
    if not rows or int(float(rows[-1]["step"])) != cfg.total_steps:  # resumed past the end of the loop
        _evaluate(run_, eval_env, agent, cfg.total_steps, cfg.final_eval_episodes)
        rows = run_.evals.rows()
    summary = _summary(cfg, suite, rows, agent, time.time() - start, run_.resumed_from)
    _write_results(run_, cfg, suite, summary)
    run_.finish(summary)
    trainer.close()
    eval_env.close()
    return summary


def _summary(cfg: Config, suite: Suite, rows: list[dict], agent: CTPGAgent, wall: float,
             resumed_from: int | None) -> dict:
    summary = {"recipe": "ctpg", "suite": suite.name, "backbone": cfg.backbone, "guide": cfg.guide,
               "seed": cfg.seed, "steps": cfg.total_steps, "updates": agent.sac.updates,
               "guide_updates": agent.guide.updates if agent.guide is not None else 0, "wall_time_s": wall,
               "final_eval_episodes": cfg.final_eval_episodes,
               "choice_share": (agent.choice_counts / agent.choice_counts.sum(-1, keepdim=True).clamp_min(1)).tolist(),
               "resumed_from": resumed_from, **eval_summary(rows, suite.task_names, suite.success_metric)}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
