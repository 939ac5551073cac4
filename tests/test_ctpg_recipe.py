"""The ctpg recipe's pieces on pendulum-mt3 with tiny networks: gates in the real agent, guide batches, timing,
QMP, config errors, and a short run with resume and the Table-1 results file."""

from __future__ import annotations

import json

import pytest
import torch

import tdmt.algos.ctpg as ctpg
from tdmt.algos.ctpg import Config, Trainer
from tdmt.config import apply_overrides, parse_args

TINY = dict(suite="pendulum-mt3", hidden=(16, 16), guide_hidden=(16, 16), batch_size_per_task=16,
            buffer_size_per_task=2000, exploration_steps=20, filter_start=0, run_dir="/tmp/unused")


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
        seen_loss.append(td["task_id"].unique().tolist())
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
    assert seen_loss and all(ids == [1, 2] for ids in seen_loss)
    assert seen_hindsight and all(ids == [1, 2] for ids in seen_hindsight)
    assert trainer.metrics()["guide/active_tasks"] == 2.0


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
    with pytest.raises(ValueError, match="guide_step"):
        apply_overrides(Config(), {"guide_step": 0})
    cfg = apply_overrides(Config(), {"suite": "metaworld-mt10", "guide_block": "success", "backbone": "sm"})
    assert cfg.resolved_run_dir() == "runs/ctpg/ctpg/sm/metaworld-mt10/seed0"
    # the default folder follows the final values, whatever order the overrides came in
    assert parse_args(Config, ["seed=3", "guide=qmp"]).resolved_run_dir() == "runs/ctpg/qmp/mtsac/halfcheetah-mt5/seed3"


def test_run_resumes_and_writes_table(tmp_path):
    cfg = Config(**{**TINY, "run_dir": str(tmp_path / "run"), "total_steps": 60, "eval_every": 60,
                    "eval_episodes": 2, "log_every": 10, "checkpoint_every": 30, "guide_step": 5})
    first = ctpg.run(cfg)
    assert first["guide_updates"] == (60 - 20) // 5 and first["resumed_from"] is None
    second = ctpg.run(apply_overrides(cfg, {"total_steps": 90}))
    assert second["resumed_from"] == 60 and second["steps"] == 90
    results = (tmp_path / "run" / "results.md").read_text()
    assert "| pendulum-mt3 | Base |" in results and "| w/ CTPG | " in results
    ctpg_row = [line for line in results.splitlines() if line.startswith("|  | w/ CTPG")][0]
    assert ctpg_row.split("|")[3].strip() == f"{second['final_mean_return'] / 1e3:.2f}"  # the MTSAC cell
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["guide"] == "ctpg"
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    evals = (tmp_path / "run" / "eval.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in evals[1:]] == ["60", "90"]  # every 60 steps, and at the end
