"""sac_mt recipe: config checks, paper sizes, every backbone end to end, resume, and a learning test."""

import copy
import json

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdmt.algos import get_recipe
from tdmt.algos.sac_mt import Config, MultiTaskSAC, paper_sizes, run
from tdmt.config import parse_args
from tdmt.envs import get_suite

TINY = dict(suite="pendulum-mt3", hidden=(16,), batch_size_per_task=8, buffer_size_per_task=1000,
            exploration_steps=5, eval_episodes=1, log_every=5)


def test_config_errors_and_defaults():
    with pytest.raises(ValueError, match="backbone='moe' is not a valid choice; valid: \\['mtsac', 'mhsac'"):
        parse_args(Config, ["backbone=moe"])
    with pytest.raises(ValueError, match="unknown suite 'cheetah'"):
        parse_args(Config, ["suite=cheetah"])
    cfg = parse_args(Config, ["suite=metaworld-mt10", "backbone=paco", "seed=3"])
    assert cfg.resolved_run_dir() == "runs/sac_mt/paco/metaworld-mt10/seed3"
    paper = (cfg.lr, cfg.batch_size_per_task, cfg.gamma, cfg.tau, cfg.exploration_steps, cfg.reward_scale)
    assert paper == (1e-4, 128, 0.99, 0.005, 2000, 0.1)
    assert get_recipe("sac_mt").Config is Config


def test_paper_sizes():
    assert paper_sizes("halfcheetah-mt8", "mtsac") == ((400, 400), {})
    assert paper_sizes("metaworld-mt10", "mhsac") == ((400,) * 5, {})
    assert paper_sizes("metaworld-mt50", "paco") == ((400,) * 3, {})
    assert paper_sizes("metaworld-mt10", "sm") == ((400, 400), {"module_size": 128})
    assert paper_sizes("halfcheetah-mt5", "sm") == ((400,), {"module_size": 64})
    assert paper_sizes("halfcheetah-mt5", "pcgrad", (64, 64)) == ((64, 64), {})


@pytest.mark.parametrize("backbone", ["mtsac", "mhsac", "pcgrad", "sm", "paco"])
def test_every_backbone_runs_and_writes_its_results(tmp_path, backbone):
    cfg = Config(**TINY, backbone=backbone, total_steps=12, eval_every=12, run_dir=str(tmp_path / backbone))
    summary = run(cfg)
    assert summary["updates"] == 12 - 5 and summary["backbone"] == backbone
    assert -2000 < summary["final_mean_return"] < 0  # pendulum returns are negative
    for name in ("metrics.csv", "eval.csv", "results.md", "curves.png", "summary.json", "config.yaml"):
        assert (tmp_path / backbone / name).exists(), name
    assert "PendulumGravityHigh" in (tmp_path / backbone / "results.md").read_text()


def test_resume_continues_from_the_checkpoint(tmp_path):
    base = dict(TINY, eval_every=10, checkpoint_every=10, run_dir=str(tmp_path))
    first = run(Config(**base, total_steps=20))
    assert first["updates"] == 15 and first["resumed_from"] is None
    second = run(Config(**base, total_steps=30))
    assert second["resumed_from"] == 20
    assert second["updates"] == 25  # 15 restored + steps 21..30
    steps = [int(r.split(",")[0]) for r in (tmp_path / "eval.csv").read_text().splitlines()[1:]]
    assert steps == [10, 20, 30]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 30


@pytest.mark.slow
def test_mtsac_learns_pendulum_mt3(tmp_path):
    """MTSAC with small nets on pendulum-mt3: random play scores about -1200 per episode; after 4000 steps per
    task (~1 min on 1 core) the mean deterministic return must exceed -400 and every task must beat -900."""
    cfg = Config(suite="pendulum-mt3", hidden=(64, 64), lr=1e-3, batch_size_per_task=64, buffer_size_per_task=10_000,
                 exploration_steps=500, total_steps=4000, eval_every=2000, eval_episodes=3, log_every=500,
                 run_dir=str(tmp_path))
    summary = run(cfg)
    assert summary["final_mean_return"] > -400, summary
    assert all(r > -900 for r in summary["final_return"].values()), summary


def test_state_dict_round_trip_restores_networks_temperatures_and_optimizers():
    suite = get_suite("pendulum-mt3")
    cfg = Config(**TINY)
    torch.manual_seed(0)
    a = MultiTaskSAC(cfg, suite)
    tid = torch.arange(3)[:, None].expand(3, 4)
    flags = torch.zeros(3, 4, 1, dtype=torch.bool)
    batch = TensorDict({"observation": torch.randn(3, 4, 3), "task_id": tid, "action": torch.rand(3, 4, 1),
                        "next": {"observation": torch.randn(3, 4, 3), "task_id": tid,
                                 "reward": torch.randn(3, 4, 1), "done": flags, "terminated": flags}}, [3, 4])
    a.update(batch.clone(), env_steps=0)
    torch.manual_seed(1)
    b = MultiTaskSAC(cfg, suite)
    obs = TensorDict({"observation": torch.randn(3, 3), "task_id": torch.arange(3)}, [3])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert not torch.allclose(a.act(obs.clone())["action"], b.act(obs.clone())["action"])
        b.load_state_dict(copy.deepcopy(a.state_dict()))  # as if read back from a checkpoint file
        torch.testing.assert_close(b.act(obs.clone())["action"], a.act(obs.clone())["action"])
    torch.testing.assert_close(b.loss.log_alpha, a.loss.log_alpha)
    assert b.updates == 1 and b.optimizers["critic"].state_dict()["state"]
    torch.manual_seed(2)
    out_a = a.update(batch.clone(), env_steps=0)
    torch.manual_seed(2)
    out_b = b.update(batch.clone(), env_steps=0)
    torch.testing.assert_close(out_b["loss_qvalue"], out_a["loss_qvalue"])
    torch.testing.assert_close(b.loss.min_q(batch), a.loss.min_q(batch))


def test_explore_stores_masked_actions_on_a_heterogeneous_suite():
    suite = get_suite("mujoco-mt6")  # act dims 8, 3, 6, 6, 1, 1 padded to 8
    sac = MultiTaskSAC(Config(suite="mujoco-mt6", hidden=(16,)), suite)
    td = TensorDict({"observation": torch.randn(6, 2, 105), "task_id": torch.arange(6)[:, None].expand(6, 2)}, [6, 2])
    for random in (True, False):
        action = sac.explore(td.clone(), random=random)["action"]
        for k, dim in enumerate(suite.act_dims):
            assert (action[k, :, dim:] == 0).all()
            assert (action[k, :, :dim] != 0).all()
        assert action.abs().max() <= 1
