"""The ctpg recipe's pieces on pendulum-mt3 with tiny networks: gates in the real agent, guide batches, timing,
QMP, config errors, and a short run with resume and the Table-1 results file."""

from __future__ import annotations

import json

import pytest
import torch

import tdmt.algos.ctpg as ctpg
from tdmt.algos.ctpg import Config, Trainer
from tdmt.config import apply_overrides, parse_args
from tdmt.device import factories_on_meta

TINY = dict(suite="pendulum-mt3", hidden=(16, 16), guide_hidden=(16, 16), batch_size_per_task=16,
            buffer_size_per_task=2000, exploration_steps=20, filter_start=0, run_dir="/tmp/unused", progress=False)


def _trainer(**overrides) -> Trainer:
    torch.manual_seed(0)
    return Trainer(Config(**{**TINY, **overrides}))


def _block_task0(trainer: Trainer) -> None:
    with torch.no_grad():  # task 0 has the highest temperature: the guide-block gate blocks it
        trainer.agent.sac.loss.log_alpha.copy_(torch.tensor([1.0, -1.0, -1.0]))


def test_blocked_task_never_uses_another_policy():
    trainer = _trainer(policy_filter=False)
    _block_task0(trainer)
    assert trainer.agent.blocked().tolist() == [True, False, False]
    obs = torch.randn(3, 3)
    choices = torch.stack([trainer.agent.guide.choose(obs, torch.arange(3), trainer.agent.blocked(), False)[0]
                           for _ in range(300)])
    assert (choices[:, 0] == 0).all()
    assert (choices[:, 1] != 1).any() and (choices[:, 2] != 2).any()  # unblocked tasks do get guidance


def test_blocked_task_never_enters_guide_batches(monkeypatch):
    trainer = _trainer(policy_filter=False, guide_step=2)
    seen_loss, seen_hindsight = [], []
    real_forward = ctpg.GuideDiscreteSACLoss.forward
    real_hindsight = ctpg.hindsight_scores

    def forward(self, td):
        weight = torch.zeros(3).index_add(0, td["task_id"].flatten(), td["active"].flatten())
        seen_loss.append((td["task_id"][td["active"] > 0].unique().tolist(), tuple(td.shape), weight.tolist()))
        return real_forward(self, td)

    def hindsight(policies, seq_obs, seq_act, own):
        seen_hindsight.append(own.unique().tolist())
        return real_hindsight(policies, seq_obs, seq_act, own)

    monkeypatch.setattr(ctpg.GuideDiscreteSACLoss, "forward", forward)
    monkeypatch.setattr(ctpg, "hindsight_scores", hindsight)
    for step in range(1, 41):
        if step > 20:
            _block_task0(trainer)
        trainer.step(step)
    assert trainer.agent.guide.updates == 10  # steps 22, 24, ..., 40
    # the public code spreads the guide batch (16 x 3 tasks) over the unblocked tasks, each weighing the same
    assert seen_loss and all(seen == ([1, 2], (3, 16), [0.0, 16.0, 16.0]) for seen in seen_loss), seen_loss
    assert seen_hindsight and all(ids == [1, 2] for ids in seen_hindsight)
    assert trainer.metrics()["guide/active_tasks"] == 2.0


def test_guide_batch_spread_or_per_task():
    trainer = _trainer(guide_step=2)
    for step in range(1, 31):
        trainer.step(step)
    blocked = torch.tensor([False, True, False])
    # one fixed shape [K, N] whatever is blocked (no host read); rows r of the (r mod T)-th unblocked task, each task's
    # rows weighing 1 in all: the public code's even spread of N*K over the unblocked tasks, in expectation
    spread = ctpg.guide_batch(trainer.guide_replay, blocked, spread=True)
    assert spread.shape == (3, 16) and spread["task_id"][:, 0].tolist() == [0, 2, 0]
    assert (spread["task_id"] == spread["task_id"][:, :1]).all()  # one task per row
    assert spread["active"][:, 0].tolist() == [0.5, 1.0, 0.5]
    per_task = ctpg.guide_batch(trainer.guide_replay, blocked, spread=False)
    assert per_task["task_id"][:, 0].tolist() == [0, 1, 2] and per_task["active"][:, 0].tolist() == [1.0, 0.0, 1.0]
    none_blocked = ctpg.guide_batch(trainer.guide_replay, torch.zeros(3, dtype=torch.bool), spread=True)
    assert none_blocked["task_id"][:, 0].tolist() == [0, 1, 2] and none_blocked["active"].eq(1).all()


def test_random_guide_draws_uniformly_every_h_steps_and_keeps_the_gate():
    """``guide=random`` (ablation): a uniform choice among the K policies at each block start, no guide learner;
    a task blocked by the guide-block gate keeps its own policy."""
    trainer = _trainer(guide="random", guide_step=2, policy_filter=False)
    assert trainer.agent.guide is None and trainer.guide_replay is None
    for step in range(1, 21):
        trainer.step(step)
    _block_task0(trainer)
    for step in range(21, 621):
        trainer.step(step)
    counts = trainer.agent.choice_counts
    assert counts.sum().item() == 3 * 300  # one draw per task every 2 steps after the 20 random steps
    assert counts[0].tolist() == [300, 0, 0]  # blocked: its own policy
    share = counts[1:] / 300
    assert ((share - 1 / 3).abs() < 0.1).all(), share  # 300 draws each: uniform within ±0.1


def test_qmp_executes_the_winning_proposal_at_the_block_start(monkeypatch):
    trainer = _trainer(guide="qmp", guide_step=4)
    proposals = []
    real = ctpg.qmp_choice

    def spy(policies, observation, own):
        out = real(policies, observation, own)
        proposals.append(out)
        return out

    monkeypatch.setattr(ctpg, "qmp_choice", spy)
    for step in range(1, 22):  # step 21 (after 20 random steps) starts a block: QMP draws and executes the winner
        trainer.step(step)
    (choice, action), = proposals
    executed = torch.stack([trainer.replay.task_data(k)["action"][-1] for k in range(3)])
    torch.testing.assert_close(executed, action * trainer.agent.sac.mask)
    torch.testing.assert_close(trainer.agent.behaviour.choice, choice)
    for step in range(22, 25):  # inside the block: fresh samples of π_j, no new proposals
        trainer.step(step)
    assert len(proposals) == 1
    trainer.step(25)
    assert len(proposals) == 2


def test_behaviour_changes_only_at_block_starts_in_the_agent():
    trainer = _trainer(guide_step=5, policy_filter=False, guide_block="none")
    choices = []
    for step in range(1, 61):
        trainer.step(step)
        choices.append(trainer.agent.behaviour.choice.clone())
    choices = torch.stack(choices)  # pendulum episodes are 200 steps: blocks start at steps 1, 6, 11, ...
    changed = (choices[1:] != choices[:-1]).any(-1).nonzero().flatten() + 1
    assert all(int(t) % 5 == 0 for t in changed), changed.tolist()
    assert len(changed) > 0
    n = trainer.guide_replay.num_transitions(0)
    assert n == 12
    stored = trainer.guide_replay.task_data(0)
    assert (stored["num_steps"] == 5).all() and stored["seq_valid"].all()


def test_qmp_redraws_only_every_h_steps(monkeypatch):
    trainer = _trainer(guide="qmp", guide_step=4)
    calls = []
    real = ctpg.qmp_choice

    def spy(policies, observation, own):
        calls.append(trainer.agent.env_steps)
        return real(policies, observation, own)

    monkeypatch.setattr(ctpg, "qmp_choice", spy)
    for step in range(1, 42):
        trainer.step(step)
    assert trainer.guide_replay is None and trainer.agent.guide is None
    assert calls == [21, 25, 29, 33, 37, 41]  # after 20 random exploration steps, every H=4 steps


def test_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="success"):
        apply_overrides(Config(), {"guide_block": "success"})  # HalfCheetah has no success metric
    with pytest.raises(ValueError, match="valid"):
        apply_overrides(Config(), {"guide": "bpt"})
    assert parse_args(Config, ["guide_block=none", "hindsight=false"]).guide_block == "none"  # the CLI spelling
    with pytest.raises(ValueError, match="guide_step=0 is out of range; valid: >= 1"):
        apply_overrides(Config(), {"guide_step": 0})
    with pytest.raises(ValueError, match="block_success_threshold=1.5 is out of range; valid: \\[0, 1\\]"):
        apply_overrides(Config(), {"block_success_threshold": 1.5})
    cfg = apply_overrides(Config(), {"suite": "metaworld-mt10", "guide_block": "success", "backbone": "sm"})
    assert cfg.resolved_run_dir().startswith("runs/ctpg/metaworld-mt10/guide_block=success,backbone=sm-seed0-")
    # the default folder follows the final values, whatever order the overrides came in
    assert parse_args(Config, ["seed=3", "guide=qmp"]).resolved_run_dir().startswith(
        "runs/ctpg/halfcheetah-mt5/guide=qmp-seed3-")
    public_code = (cfg.block_success_threshold, cfg.guide_batch, cfg.filter_start, cfg.max_grad_norm, cfg.alpha_max)
    assert public_code == (0.8, "spread", 10_000, 0.1, 1.0)
    assert "cuda" in Config.DEVICES and parse_args(Config, ["guide=random"]).guide == "random"


def test_run_resumes_and_writes_table(tmp_path):
    cfg = Config(**{**TINY, "run_dir": str(tmp_path / "run"), "total_steps": 60, "eval_every": 60,
                    "eval_episodes": 2, "final_eval_episodes": 4, "log_every": 10, "checkpoint_every": 30,
                    "guide_step": 5})
    first = ctpg.run(cfg)
    assert first["guide_updates"] == (60 - 20) // 5 and first["resumed_from"] is None
    second = ctpg.run(apply_overrides(cfg, {"total_steps": 90}))
    assert second["resumed_from"] == 60 and second["steps"] == 90
    results = (tmp_path / "run" / "results.md").read_text()
    assert "| pendulum-mt3 | Base |" in results and "| w/ CTPG | " in results and "over 4 deterministic" in results
    ctpg_row = [line for line in results.splitlines() if line.startswith("|  | w/ CTPG")][0]
    assert ctpg_row.split("|")[3].strip() == f"{second['final_mean_return'] / 1e3:.2f}"  # the MTSAC cell
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["guide"] == "ctpg" and summary["final_eval_episodes"] == 4
    assert all(abs(sum(row) - 1) < 1e-5 for row in summary["choice_share"])  # each task's draws, as shares
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    evals = (tmp_path / "run" / "eval.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in evals[1:]] == ["60", "90"]  # every 60 steps, and at the end


@pytest.mark.parametrize("guide", ["ctpg", "qmp", "random"])
def test_updates_and_draws_create_no_tensor_on_the_default_device(guide):
    """Device hygiene for CUDA runs, checked on the CPU (DESIGN §9): with the default device set to ``meta``, any
    tensor made without ``device=`` is a meta tensor and fails on its first mix with real ones. Whole trainer steps
    (env step, behaviour draw with both gates, guide transitions stored with a mask, the control update with PaCo's
    reset and the gradient clips, the guide update with hindsight on a spread batch) must place their tensors
    explicitly."""
    trainer = _trainer(guide=guide, backbone="paco", mask_out_start=0, guide_step=2, hidden=(8,), guide_hidden=(8,))
    for step in range(1, 31):
        trainer.step(step)
    trainer.agent.behaviour.t.zero_()  # every row starts a block: a full draw
    trainer.agent.behaviour.skip_idle_draws = False  # and the CUDA path: a draw at every step
    blocked = torch.tensor([False, True, False])
    with factories_on_meta():
        for step in (31, 32):  # 32: a guide update
            trainer.step(step)
        guide_rows = ctpg.guide_batch(trainer.guide_replay, blocked, spread=False) if guide == "ctpg" else None
        if guide_rows is not None:
            trainer.agent.guide.update(guide_rows)
    assert trainer.td["observation"].device.type == "cpu" and trainer.agent.sac.updates == 32 - 20
    assert trainer.agent.guide is None or trainer.agent.guide.updates == (32 - 20) // 2 + 1
