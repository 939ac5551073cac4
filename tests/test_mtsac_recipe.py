"""sac_mt recipe: config checks, paper sizes, every backbone end to end, resume, and a learning test."""

import copy
import json

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdmt.algos import get_recipe
from tdmt.algos.sac_mt import Config, MultiTaskSAC, eval_envs_per_task, evaluate_episodes, paper_sizes, run
from tdmt.config import parse_args
from tdmt.envs import get_suite, make_env
from tdmt.eval import evaluate

TINY = dict(suite="pendulum-mt3", hidden=(16,), batch_size_per_task=8, buffer_size_per_task=1000,
            exploration_steps=5, eval_episodes=1, final_eval_episodes=2, log_every=5, progress=False)


def test_memmap_replay_is_refused_off_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as far as validation can tell
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="^storage='memmap' with replay_device='cuda' is not valid; valid: "
                                         "replay_device=cpu or storage=memory$"):
        parse_args(Config, ["storage=memmap", "replay_device=cuda"])
    with pytest.raises(ValueError, match="storage='memmap' with device='cuda:0' .* valid: replay_device=cpu"):
        parse_args(Config, ["storage=memmap", "device=cuda:0"])
    with pytest.raises(ValueError, match="^replay_device='gpu' is not valid; valid: cpu, cuda, cuda:N"):
        parse_args(Config, ["replay_device=gpu"])
    cfg = parse_args(Config, ["storage=memmap", "device=cuda", "replay_device=cpu"])
    assert cfg.replay_on() == torch.device("cpu") and parse_args(Config, ["device=cuda"]).replay_on().type == "cuda"


def test_config_errors_and_defaults():
    with pytest.raises(ValueError, match="backbone='moe' is not a valid choice; valid: \\['mtsac', 'mhsac'"):
        parse_args(Config, ["backbone=moe"])
    with pytest.raises(ValueError, match="cheetah"):
        parse_args(Config, ["suite=cheetah"])
    with pytest.raises(KeyError, match="renamed; use threads=2"):
        parse_args(Config, ["num_threads=2"])
    with pytest.raises(ValueError, match="alpha_max=0.5 is below alpha_init=1.0"):
        parse_args(Config, ["alpha_max=0.5"])
    with pytest.raises(ValueError, match="final_eval_episodes=0 is out of range; valid: >= 1"):
        parse_args(Config, ["final_eval_episodes=0"])
    with pytest.raises(ValueError, match="mask_out_on='actor' is not a valid choice"):
        parse_args(Config, ["mask_out_on=actor"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' but no CUDA device is visible"):
            parse_args(Config, ["device=cuda"])
    cfg = parse_args(Config, ["suite=metaworld-mt10", "backbone=paco", "seed=3", "replay_device=cpu"])
    assert cfg.resolved_run_dir().startswith("runs/sac_mt/metaworld-mt10/backbone=paco-seed3-")
    paper = (cfg.lr, cfg.batch_size_per_task, cfg.gamma, cfg.tau, cfg.exploration_steps, cfg.reward_scale)
    assert paper == (1e-4, 128, 0.99, 0.005, 2000, 0.1)
    public_code = (cfg.alpha_loss, cfg.alpha_max, cfg.max_grad_norm, cfg.mask_out_on, cfg.sm_routing_input)
    assert public_code == ("alpha", 1.0, 0.1, "critic", "state_and_task")
    assert (cfg.final_eval_episodes, cfg.paco_reset, cfg.threads) == (100, True, 1)
    assert get_recipe("sac_mt").Config is Config


@pytest.mark.parametrize(("suite", "per_task"), [("halfcheetah-mt5", 100_000), ("halfcheetah-mt8", 125_000),
                                                 ("metaworld-mt10", 100_000), ("metaworld-mt50", 200_000),
                                                 ("pendulum-mt3", 333_333)])
def test_replay_defaults_are_the_papers_totals_split_over_the_tasks(suite, per_task):
    """CTPG: 5e5 (MT5), 1e6 (MT8, MT10), 1e7 (MT50) transitions in all, ``capacity // task_num`` per task."""
    assert Config(suite=suite).replay_size_per_task(get_suite(suite)) == per_task
    assert Config(suite=suite, buffer_size_per_task=777).replay_size_per_task(get_suite(suite)) == 777


def test_paper_sizes():
    assert paper_sizes("halfcheetah-mt8", "mtsac") == ((400, 400), {})
    assert paper_sizes("metaworld-mt10", "mhsac") == ((400,) * 5, {})
    assert paper_sizes("metaworld-mt50", "paco") == ((400,) * 3, {})
    routing = {"routing_input": "state_and_task"}
    assert paper_sizes("metaworld-mt10", "sm") == ((400, 400), {"module_size": 128, **routing})
    assert paper_sizes("halfcheetah-mt5", "sm", (), "task") == ((400,), {"module_size": 64, "routing_input": "task"})
    assert paper_sizes("halfcheetah-mt5", "pcgrad", (64, 64)) == ((64, 64), {})


@pytest.mark.parametrize("backbone", ["mtsac", "mhsac", "pcgrad", "sm", "paco"])
def test_every_backbone_runs_and_writes_its_results(tmp_path, backbone):
    cfg = Config(**TINY, backbone=backbone, total_steps=12, eval_every=12, run_dir=str(tmp_path / backbone))
    summary = run(cfg)
    assert summary["updates"] == 12 - 5 and summary["backbone"] == backbone
    assert -2000 < summary["final_mean_return"] < 0  # pendulum returns are negative
    for name in ("metrics.csv", "eval.csv", "results.md", "curves.png", "summary.json", "config.yaml"):
        assert (tmp_path / backbone / name).exists(), name
    results = (tmp_path / backbone / "results.md").read_text()
    assert "PendulumGravityHigh" in results and "the final policy over 2" in results and "### final return" in results
    assert summary["final_eval_episodes"] == 2


def test_resume_continues_from_the_checkpoint(tmp_path):
    base = dict(TINY, eval_every=10, checkpoint_every=10, run_dir=str(tmp_path))
    first = run(Config(**base, total_steps=20))
    assert first["updates"] == 15 and first["resumed_from"] is None
    second = run(Config(**base, total_steps=30))
    assert second["resumed_from"] == 20
    assert second["updates"] == 25  # 15 restored + steps 21..30
    steps = [int(r.split(",")[0]) for r in (tmp_path / "eval.csv").read_text().splitlines()[1:]]
    assert steps == [10, 20, 30]  # 20 and 30: the final evaluations of the two budgets
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 30


@pytest.mark.slow
def test_mtsac_learns_pendulum_mt3(tmp_path):
    """MTSAC with small nets on pendulum-mt3: random play scores about -1200 per episode; after 4000 steps per
    task (~1 min on 1 core) the mean deterministic return must exceed -400 and every task must beat -900."""
    cfg = Config(suite="pendulum-mt3", hidden=(64, 64), lr=1e-3, batch_size_per_task=64, buffer_size_per_task=10_000,
                 exploration_steps=500, total_steps=4000, eval_every=2000, eval_episodes=3, final_eval_episodes=6,
                 log_every=500, run_dir=str(tmp_path), progress=False)
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


def test_final_evaluation_runs_its_episodes_in_rounds_on_a_bounded_set_of_envs():
    """CTPG Table 1 evaluates the final policy over 100 episodes per task; the eval env holds at most 10 instances
    per task and runs the episodes in rounds on them: 6 episodes on 2 envs per task = 3 rounds, whose pooled mean,
    std and success equal those of the 6 episodes."""
    assert eval_envs_per_task(Config()) == 10  # 10 periodic, 100 final episodes: 10 instances per task
    assert [eval_envs_per_task(Config(eval_episodes=e, final_eval_episodes=f)) for e, f in
            ((4, 100), (30, 90), (7, 100), (5, 5))] == [4, 10, 1, 5]
    # and at most 100 in all: Meta-World MT50 gets 2 per task (100 instances of ~22 MB, not 500)
    assert eval_envs_per_task(Config(suite="metaworld-mt50")) == 2
    suite = get_suite("pendulum-mt3")
    sac = MultiTaskSAC(Config(**TINY), suite)
    env, twin = (make_env("pendulum-mt3", seed=4, num_envs_per_task=2) for _ in range(2))
    result = evaluate_episodes(env, sac.act, 6)
    rounds = [evaluate(twin, sac.act) for _ in range(3)]  # the same seeds: the same 3 rounds
    per_episode = torch.tensor([[[m - s, m + s] for m, s in zip(r.return_mean, r.return_std)] for r in rounds])
    episodes = per_episode.permute(1, 0, 2).reshape(3, 6)  # 2 episodes per round: mean ± std are the two returns
    torch.testing.assert_close(torch.tensor(result.return_mean), episodes.mean(-1))
    torch.testing.assert_close(torch.tensor(result.return_std), episodes.std(-1, unbiased=False), rtol=1e-4, atol=1e-3)
    assert len(set(episodes[0].tolist())) == 6  # the rounds are different episodes
    with pytest.raises(ValueError, match="episodes=5 is not a multiple of the 2 envs per task"):
        evaluate_episodes(env, sac.act, 5)


def test_update_clips_gradients_caps_alpha_and_resets_masked_paco_tasks(monkeypatch):
    """The public CTPG code's settings around the loss: each component's gradient clipped to norm 0.1, α capped at
    1 after its step, and (PaCo) a masked-out task's composition weights reset to a mix of the kept tasks'."""
    suite = get_suite("pendulum-mt3")
    cfg = Config(**{**TINY, "backbone": "paco", "hidden": (8,), "mask_out_start": 0})
    torch.manual_seed(0)
    sac = MultiTaskSAC(cfg, suite)
    tid = torch.arange(3)[:, None].expand(3, 4)
    flags = torch.zeros(3, 4, 1, dtype=torch.bool)
    reward = torch.zeros(3, 4, 1)
    reward[1] = 1e4  # task 1's critic loss ~1e8: masked out
    batch = TensorDict({"observation": torch.randn(3, 4, 3), "task_id": tid, "action": torch.rand(3, 4, 1),
                        "next": {"observation": torch.randn(3, 4, 3), "task_id": tid,
                                 "reward": reward, "done": flags, "terminated": flags}}, [3, 4])
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm):
        params = list(params)
        clipped.append((max_norm, real_clip(params, max_norm).item(),
                        torch.cat([p.grad.flatten() for p in params]).norm().item()))
        return torch.tensor(0.0)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    with torch.no_grad():
        sac.loss.log_alpha.fill_(0.5)  # α = e^0.5 > 1: capped after the step
    weights = sac.loss.actor_network_params.get(("module", "0", "module", "net", "task_weights"))
    out = sac.update(batch, env_steps=10)
    assert out["task_kept"].tolist() == [1.0, 0.0, 1.0]
    assert [c[0] for c in clipped] == [0.1] * 3 and all(c[2] <= 0.1 + 1e-6 for c in clipped)
    assert max(c[1] for c in clipped) > 0.1  # some gradient was larger than the clip: the clip acted
    assert (sac.loss.alpha <= 1.0 + 1e-6).all()
    w = weights.detach()
    c = torch.linalg.lstsq(w[[0, 2]].T, w[1].unsqueeze(-1)).solution.squeeze(-1)
    torch.testing.assert_close(c @ w[[0, 2]], w[1])  # task 1's weights: a mix of tasks 0 and 2's
    assert (c >= 0).all() and c.sum().item() == pytest.approx(1.0, abs=1e-5)
