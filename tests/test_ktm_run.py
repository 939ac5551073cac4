"""KTM-DRL / teachers / TD3-MT recipes at tiny budgets: outputs, Table 3 switches, resume mid-offline and
mid-online, masked exploration, config errors."""

from __future__ import annotations

import json

import pytest
import torch

from tdmt.algos import get_recipe, td3_mt
from tdmt.algos import ktm_drl as ktm
from tdmt.algos import teachers as teachers_recipe
from tdmt.algos.run import StopRequested, TrainingRun
from tdmt.algos.td3_common import EpisodeTurns, OnlineCollector, write_results
from tdmt.config import parse_args
from tdmt.envs import PadSpaces, get_suite, make_env
from tdmt.modules.td3 import make_student_actor

SUITE = "pendulum-mt3"
TINY = dict(hidden=(16, 16), batch_size_per_task=16, buffer_size_per_task=200, eval_episodes=1, progress=False)


@pytest.fixture(scope="module")
def tiny_teachers(tmp_path_factory):
    """Barely trained teachers (300 steps): enough for plumbing, not for learning."""
    run_dir = tmp_path_factory.mktemp("teachers")
    cfg = teachers_recipe.Config(suite=SUITE, run_dir=str(run_dir), total_steps=300, start_steps=100, eval_every=150,
                                 checkpoint_every=0, **TINY)
    summary = get_recipe("train_teachers").run(cfg)
    return run_dir, summary


def ktm_cfg(run_dir, teachers_dir, **kw) -> ktm.Config:
    base = dict(suite=SUITE, run_dir=str(run_dir), teachers_dir=str(teachers_dir), offline_steps=40,
                online_steps=40, learning_starts=10, eval_every=20, checkpoint_every=10, **TINY)
    base.update(kw)
    return ktm.Config(**base)


def test_train_teachers_saves_native_teachers_replay_and_returns(tiny_teachers):
    run_dir, summary = tiny_teachers
    suite = get_suite(SUITE)
    for name in suite.task_names:
        folder = run_dir / "teachers" / name
        assert (folder / "teacher.pt").exists()
        history = json.loads((folder / "eval.json").read_text())
        assert len(history["returns"]) == 2 and history["max_average_return"] == max(history["returns"])
        replay = teachers_recipe.load_replay(folder / "replay", 2, 3, 3, 1)
        assert replay.shape == (200,)  # D_k: the teacher's ring (buffer_size=200) after 300 steps
        assert torch.all(replay["task_id"] == 2) and torch.all(replay["task_onehot"][:, 2] == 1)
    for f in ("results.md", "curves.png", "summary.json", "eval.csv"):
        assert (run_dir / f).exists()
    assert set(summary["max_average_reward"]["Ideal"]) == set(suite.task_names)


def test_ktm_run_writes_tables_and_stages(tiny_teachers, tmp_path):
    teachers_dir = tiny_teachers[0] / "teachers"
    summary = ktm.run(ktm_cfg(tmp_path / "ktm", teachers_dir))
    rows = TrainingRun(tmp_path / "ktm").evals.rows()
    assert [(int(r["step"]), r["stage"]) for r in rows] == [(20, "offline"), (40, "offline"), (60, "online"),
                                                            (80, "online")]
    text = (tmp_path / "ktm" / "results.md").read_text()
    assert "| task | Ideal | KTM-DRL | KTM-DRL after the offline stage |" in text
    assert "performance ratio to Ideal" in text
    assert (tmp_path / "ktm" / "curves.png").stat().st_size > 1000
    assert summary["label"] == "KTM-DRL" and "ratio_to_teachers" in summary


def test_table3_ablation_labels():
    labels = {ktm.Config(**switch).label for switch in (
        {}, dict(offline_steps=0), dict(online_steps=0), dict(alpha=0.0), dict(beta=0.0), dict(per_task_replay=False))}
    assert labels == {"KTM-DRL", "KTM-DRL w/o Offline", "KTM-DRL w/o Online", "KTM-DRL Online w/o Teachers",
                      "KTM-DRL Online only Teacher", "KTM-DRL w/o HER"}


@pytest.mark.parametrize("switch", [dict(offline_steps=0, per_task_replay=False), dict(alpha=0.0, beta=0.5)])
def test_table3_ablation_switches_run(tiny_teachers, tmp_path, switch):
    cfg = ktm_cfg(tmp_path / "abl", tiny_teachers[0] / "teachers", eval_every=40, **switch)
    summary = ktm.run(cfg)
    assert cfg.label in summary["max_average_reward"]
    stages = {r["stage"] for r in TrainingRun(tmp_path / "abl").evals.rows()}
    assert stages == ({"online"} if "offline_steps" in switch else {"offline", "online"})


def test_without_her_run_both_stages_no_wasted_env_steps(tiny_teachers, tmp_path):
    """per_task_replay=false: offline and online both take one task at a time; every env step is the active
    task's and is stored; K updates per epoch in both stages, as with per-task replay."""
    cfg = ktm_cfg(tmp_path / "noher", tiny_teachers[0] / "teachers", per_task_replay=False, checkpoint_every=80)
    ktm.run(cfg)
    final = tmp_path / "noher" / "checkpoints" / "step_0000000080"
    sizes = json.loads((final / "buffer_online.json").read_text())["size"]
    assert sizes == [120, 0, 0]  # 40 online epochs x K=3 env steps, all inside task 0's first 200-step episode
    state = torch.load(final / "state.pt", weights_only=False)["state"]["train"]
    assert state["learner"]["updates"] == 40 * 3 + (40 - 10) * 3  # offline K per epoch; online after learning_starts
    assert state["turns"] == {"active_task": 0, "offline_task": 0, "offline_position": 120}
    assert {r["stage"] for r in TrainingRun(tmp_path / "noher").evals.rows()} == {"offline", "online"}


def _stop_at(monkeypatch, stop_step: int) -> None:
    original = TrainingRun.maybe_checkpoint

    def maybe_checkpoint(self, step, get_state, buffers=None):
        original(self, step, get_state, buffers)
        if step == stop_step:
            self.request_stop()  # as SIGTERM would: saved and stopped at the next step boundary

    monkeypatch.setattr(TrainingRun, "maybe_checkpoint", maybe_checkpoint)


def test_resume_mid_offline_is_exact(tiny_teachers, tmp_path, monkeypatch, capsys):
    teachers_dir = tiny_teachers[0] / "teachers"
    cfg = dict(online_steps=0, checkpoint_every=40)  # one checkpoint: the final state
    ktm.run(ktm_cfg(tmp_path / "ref", teachers_dir, **cfg))
    with monkeypatch.context() as m:
        _stop_at(m, 25)
        with pytest.raises(StopRequested):
            ktm.run(ktm_cfg(tmp_path / "cut", teachers_dir, **cfg))
    assert not (tmp_path / "cut" / "summary.json").exists()
    ktm.run(ktm_cfg(tmp_path / "cut", teachers_dir, **cfg))
    assert "from step 25" in capsys.readouterr().out
    ref, cut = (torch.load(run / "checkpoints" / "step_0000000040" / "state.pt", weights_only=False)
                ["state"]["train"]["learner"]["loss"] for run in (tmp_path / "ref", tmp_path / "cut"))
    for key, value in ref.items():
        assert torch.equal(value, cut[key]), key

    def returns(run):
        return [{k: v for k, v in r.items() if k != "eval_seconds"} for r in TrainingRun(run).evals.rows()]

    assert returns(tmp_path / "cut") == returns(tmp_path / "ref")


def test_resume_mid_online_keeps_buffer_and_log(tiny_teachers, tmp_path, monkeypatch, capsys):
    teachers_dir = tiny_teachers[0] / "teachers"
    with monkeypatch.context() as m:
        _stop_at(m, 55)
        with pytest.raises(StopRequested):
            ktm.run(ktm_cfg(tmp_path / "on", teachers_dir))
    online = (tmp_path / "on" / "checkpoints" / "step_0000000055" / "buffer_online.json")
    assert json.loads(online.read_text())["size"] == [15, 15, 15]  # 15 online env steps of every task so far
    ktm.run(ktm_cfg(tmp_path / "on", teachers_dir))
    assert "from step 55" in capsys.readouterr().out
    steps = [int(r["step"]) for r in TrainingRun(tmp_path / "on").evals.rows()]
    assert steps == [20, 40, 60, 80]
    assert json.loads((tmp_path / "on" / "summary.json").read_text())["online_steps"] == 40


def test_exploration_stores_masked_actions():
    env = make_env("mujoco-mt6", tasks=["Hopper", "InvertedPendulum"])
    suite = env.suite
    actor = make_student_actor(suite.obs_max, suite.act_max, 2, (8,))
    collector = OnlineCollector(env, 10, 4)
    for _ in range(3):
        collector.step(actor, sigma=0.1)
    stored = collector.buffer.task_data(1)["action"]
    assert stored.shape == (3, 3) and torch.all(stored[:, 1:] == 0) and torch.all(stored[:, 0] != 0)
    assert torch.all(collector.buffer.task_data(0)["action"] != 0)
    env.close()


def test_without_her_one_task_for_a_whole_episode_then_the_next():
    """Table 3 "w/o HER": each turn is one whole episode of one task (starting at its reset), only that task's env
    steps, every env step stored; updates draw from that task only; offline turns last one episode length."""
    suite = get_suite("control-mt2")  # Pendulum (obs 3, act 1, 200 steps), Reacher (obs 10, act 2, 50 steps)
    actor = make_student_actor(suite.obs_max, suite.act_max, 2, (8,))
    turns = EpisodeTurns(suite, seed=5, capacity_per_task=1000, batch_size_per_task=7)
    stepped = [turns.step(actor, sigma=0.1) for _ in range(700)]
    assert [turns.buffer.num_transitions(k) for k in range(2)] == [600, 100]  # no env step thrown away
    # every turn is one whole episode: the transitions of a turn end with the episode's done, none before
    offsets = [0, 0]
    runs = [[stepped[0], 1]]
    for k in stepped[1:]:
        if k == runs[-1][0]:
            runs[-1][1] += 1
        else:
            runs.append([k, 1])
    for i, (k, length) in enumerate(runs):
        done = turns.buffer.task_data(k)["next", "done"].squeeze(-1)[offsets[k]: offsets[k] + length]
        assert not done[:-1].any() and (bool(done[-1]) or i == len(runs) - 1), (k, length)
        offsets[k] += length
    assert runs == [[0, 200], [1, 50], [0, 200], [1, 50], [0, 200]]  # one whole episode per turn
    for k in range(2):
        data = turns.buffer.task_data(k)
        assert torch.all(data["task_id"] == k)
        assert torch.all(data["action"][:, suite.act_dims[k]:] == 0)  # g^k applied before storing
    first = turns.buffer.task_data(0)["observation"][0, :3]
    env = PadSpaces(suite.tasks[0].make(), suite.obs_max, suite.act_max)
    torch.testing.assert_close(first, torch.as_tensor(env.reset(seed=5)[0][:3]))  # an episode start, seeded
    assert turns.sample(1).shape == (7,) and torch.all(turns.sample(1)["task_id"] == 1)
    offline = [turns.next_offline_task() for _ in range(460)]
    assert offline == [0] * 200 + [1] * 50 + [0] * 200 + [1] * 10
    turns.close()


def test_td3_mt_and_pcgrad_run(tmp_path):
    for pcgrad in (False, True):
        cfg = td3_mt.Config(suite=SUITE, run_dir=str(tmp_path / f"mt{pcgrad}"), total_steps=30, start_steps=10,
                            pcgrad=pcgrad, update_schedule="batched" if pcgrad else "per_task", eval_every=30,
                            checkpoint_every=0, **TINY)
        summary = get_recipe("td3_mt").run(cfg)
        assert cfg.label in summary["max_average_reward"]


def test_bad_config_values_name_the_choices():
    with pytest.raises(ValueError, match="valid: \\['float32', 'bfloat16'\\]"):
        parse_args(ktm.Config, ["precision=fp8"])
    with pytest.raises(ValueError, match="not both 0"):
        parse_args(ktm.Config, ["offline_steps=0", "online_steps=0"])
    with pytest.raises(KeyError, match="unknown config key 'gama'"):
        parse_args(ktm.Config, ["gama=0.9"])
    with pytest.raises(FileNotFoundError, match="train_teachers"):
        ktm.run(ktm.Config(suite=SUITE, teachers_dir="/nonexistent/teachers", run_dir="/tmp/unused-ktm-run"))


def test_results_tables_ratio_to_teachers(tmp_path):
    suite = get_suite(SUITE)
    run = TrainingRun(tmp_path / "r")
    for step, values in ((10, (-900.0, 50.0, 20.0)), (20, (-950.0, 80.0, 10.0))):
        run.evals.log(step, stage="online", **{f"eval/{n}/return": v for n, v in zip(suite.task_names, values)})
    ideal = [{f"eval/{n}/return": v for n, v in zip(suite.task_names, (-200.0, 100.0, 40.0))}]
    summary = write_results(run, "t", suite, {"M": run.evals.rows()}, ideal, "M")
    assert list(summary["max_average_reward"]["M"].values()) == [-900.0, 80.0, 20.0]  # max over evaluations
    ratios = list(summary["ratio_to_teachers"]["M"].values())
    assert ratios[0] != ratios[0] and ratios[1:] == [0.8, 0.5]  # nan where the teacher's return is negative
    assert "| M | n/a | 0.80 | 0.50 | 0.65 |" in (tmp_path / "r" / "results.md").read_text()
