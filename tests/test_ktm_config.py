"""TD3-family configs on BaseConfig (key names, ranges, run identity, budget keys), the default teachers folder,
and one-line errors of the Python API (loss arguments, stacked teachers, TD3 modules)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tdmt.algos import ktm_drl, td3_mt, teachers
from tdmt.config import parse_args
from tdmt.envs import action_masks
from tdmt.modules.stacked import StackedLinear, StackedMLP
from tdmt.modules.td3 import make_student_actor, make_student_critic, make_teacher_actor, make_teacher_critic
from tdmt.modules.teachers import StackedTeachers
from tdmt.objectives import TeacherDistillTD3Loss


@pytest.mark.parametrize("cls", [ktm_drl.Config, td3_mt.Config, teachers.Config])
def test_old_key_names_are_refused_with_the_new_one(cls):
    for old, new in (("batch_size", "batch_size_per_task"), ("buffer_size", "buffer_size_per_task"),
                     ("num_threads", "threads")):
        with pytest.raises(KeyError, match=f"config key '{old}' was renamed; use {new}="):
            parse_args(cls, [f"{old}=8"])
    if cls is not ktm_drl.Config:
        with pytest.raises(KeyError, match="config key 'steps' was renamed; use total_steps="):
            parse_args(cls, ["steps=8"])


@pytest.mark.parametrize(("arg", "message"), [
    ("gamma=1.5", r"gamma=1.5 is out of range; valid: \[0, 1\)"),
    ("tau=0", r"tau=0.0 is out of range; valid: \(0, 1\]"),
    ("policy_noise=-1", "policy_noise=-1.0 is out of range; valid: >= 0"),
    ("hidden=[0]", "hidden=\\[0\\] is out of range; valid: non-empty sizes >= 1"),
    ("hidden=[]", "hidden=\\[\\] is out of range; valid: non-empty sizes >= 1"),
    ("alpha=-0.5", "alpha=-0.5 is out of range; valid: >= 0"),
    ("learning_starts=-1", "learning_starts=-1 is out of range; valid: >= 0"),
    ("batch_size_per_task=0", "batch_size_per_task=0 is out of range; valid: >= 1"),
])
def test_ktm_values_out_of_range_are_refused_in_one_line(arg, message):
    with pytest.raises(ValueError, match=message):
        parse_args(ktm_drl.Config, [arg])


def test_run_identity_budget_and_ablations():
    base = ktm_drl.Config(suite="pendulum-mt3")
    longer = ktm_drl.Config(suite="pendulum-mt3", online_steps=900_000)
    assert longer.resolved_run_dir() == base.resolved_run_dir()  # the online budget may grow on resume
    folders = {ktm_drl.Config(suite="pendulum-mt3", **kw).resolved_run_dir() for kw in (
        {}, {"online_steps": 0}, {"offline_steps": 0}, {"offline_steps": 1000}, {"alpha": 0.0},
        {"per_task_replay": False}, {"update_schedule": "batched"}, {"use_onehot": True})}
    assert len(folders) == 8  # every ablation and option has its own folder
    assert all(f.startswith("runs/ktm_drl/pendulum-mt3/") for f in folders)
    assert teachers.Config(suite="pendulum-mt3", total_steps=5).resolved_run_dir() == \
        teachers.Config(suite="pendulum-mt3").resolved_run_dir()


def _teacher_run(root: Path, name: str, seed: int, done: bool = True, suite: str = "pendulum-mt3") -> Path:
    run = root / "train_teachers" / suite / name
    (run / "teachers").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"suite": suite, "seed": seed}))
    if done:
        (run / "summary.json").write_text("{}")
    return run


def test_default_teachers_dir_is_the_one_finished_run_of_suite_and_seed(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished train_teachers run for suite=pendulum-mt3 seed=1 .*"
                                                "python recipes/train_teachers.py suite=pendulum-mt3 seed=1"):
        ktm_drl.find_teachers("pendulum-mt3", 1, tmp_path)
    _teacher_run(tmp_path, "seed0-aaaaaaaa", seed=0)
    _teacher_run(tmp_path, "seed1-bbbbbbbb", seed=1, done=False)  # still training
    _teacher_run(tmp_path, "seed1-cccccccc", seed=1, suite="pendulum-mt3x")
    with pytest.raises(FileNotFoundError, match="no finished train_teachers run"):
        ktm_drl.find_teachers("pendulum-mt3", 1, tmp_path)
    one = _teacher_run(tmp_path, "hidden=64x64-seed1-dddddddd", seed=1)
    assert ktm_drl.find_teachers("pendulum-mt3", 1, tmp_path) == one / "teachers"
    two = _teacher_run(tmp_path, "lr=0.001-seed1-eeeeeeee", seed=1)
    with pytest.raises(ValueError, match=f"2 finished train_teachers runs .*{one.name}.*{two.name}.*teachers_dir="):
        ktm_drl.find_teachers("pendulum-mt3", 1, tmp_path)
    assert ktm_drl.Config(teachers_dir="x/teachers").resolved_teachers_dir() == Path("x/teachers")


def test_loss_arguments_are_checked_in_one_line():
    actor, critic = make_student_actor(3, 2, 2, (8,)), make_student_critic(3, 2, 2, (8,))
    masks = action_masks([2, 1], 2)
    for kw, message in (
            ({"action_masks": torch.ones(2)}, r"action_masks of shape \(2,\) is not valid; valid: a \[K, act_max\]"),
            ({"action_masks": torch.full((2, 2), 0.5)}, "action_masks=.* is not valid; valid: 0/1 entries"),
            ({"policy_noise": -0.1}, "policy_noise=-0.1 is not valid; valid: a number >= 0"),
            ({"noise_clip": float("nan")}, "noise_clip=nan is not valid; valid: a number >= 0"),
            ({"reduction": "avg"}, r"reduction='avg' is not valid; valid: \['mean', 'sum', 'none'\]"),
            ({"alpha": -1.0, "teachers": None}, "alpha=-1.0 is not valid; valid: a number >= 0"),
            ({"mode": "distill"}, r"mode='distill' is not valid; valid: \['offline', 'online'\]")):
        args = {"action_masks": masks, "teachers": None, "alpha": 0.0, **kw}
        with pytest.raises(ValueError, match=message):
            TeacherDistillTD3Loss(actor, critic, args.pop("teachers"), **args)
    loss = TeacherDistillTD3Loss(actor, critic, None, action_masks=masks, alpha=0.0)
    batch = {"observation": torch.zeros(2, 4, 3), "action": torch.zeros(2, 4, 2)}
    from tensordict import TensorDict
    td = TensorDict(batch, batch_size=[2, 4])
    with pytest.raises(ValueError, match=r"task=2 is out of range; valid: None, an int in \[0, 2\), or 'rows'"):
        loss.actor_loss(td[0], task=2)
    with pytest.raises(ValueError, match=r"task='rows' with batch shape \(4,\) is not valid"):
        loss.actor_loss(td[0], task="rows")
    with pytest.raises(ValueError, match="value_type=.* is not valid; valid: \\[ValueEstimators.TD0\\]"):
        from torchrl.objectives import ValueEstimators
        loss.make_value_estimator(ValueEstimators.TDLambda)


def test_stacked_teachers_and_modules_are_checked_in_one_line():
    def native(obs, act):
        mlp = [(torch.zeros(obs + act, 4), torch.zeros(4)), (torch.zeros(4, 1), torch.zeros(1))]
        return {"obs_dim": obs, "act_dim": act, "actor": [(torch.zeros(obs, act), torch.zeros(act))],
                "critic1": mlp, "critic2": mlp}

    with pytest.raises(ValueError, match="teachers=\\[\\] is not valid; valid: one teacher per task"):
        StackedTeachers([], 3, 1)
    with pytest.raises(ValueError, match="teacher sizes \\(obs 4, act 1\\) exceed the padding.*valid: obs_max >= 4"):
        StackedTeachers([native(4, 1)], 3, 1)
    teachers = StackedTeachers([native(3, 1), native(2, 1)], 3, 1)
    with pytest.raises(ValueError, match=r"task_id=5 is out of range; valid: 0 <= task_id < 2"):
        teachers.q1(torch.zeros(4, 3), torch.zeros(4, 1), 5)
    with pytest.raises(ValueError, match=r"observation width 2, action width 1 is not valid; valid: the padded sizes"):
        teachers.q(torch.zeros(2, 4, 2), torch.zeros(2, 4, 1))
    torch.testing.assert_close(teachers.q1(torch.ones(4, 3), torch.ones(4, 1), 1), teachers.q1(
        torch.ones(2, 4, 3), torch.ones(2, 4, 1))[1])
    for call, message in (
            (lambda: make_student_actor(0, 1, 2), "obs_dim=0 is not valid; valid: an int >= 1"),
            (lambda: make_student_critic(3, 1, 2, hidden=[64, 0]), r"hidden=\[64, 0\] is not valid"),
            (lambda: make_student_actor(3, 1, 2, hidden=64), "hidden=64 is not valid"),
            (lambda: make_teacher_actor(0, 3, 1), "num_tasks=0 is not valid; valid: an int >= 1"),
            (lambda: make_teacher_critic(2, 3, 1, torch.ones(3, 1)), r"action_masks of shape \(3, 1\) is not valid"),
            (lambda: StackedLinear(2, 0, 4), "in_features=0 is not valid; valid: an int >= 1"),
            (lambda: StackedMLP(2, 3, 1, hidden=(-4,)), r"hidden=\[-4\] is not valid")):
        with pytest.raises(ValueError, match=message):
            call()
