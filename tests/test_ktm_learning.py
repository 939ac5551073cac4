"""Learning tests (slow, run in CI): KTM-DRL's two stages each transfer the teachers into one student, on a suite
whose tasks differ in observation AND action sizes (``control-mt2``: Pendulum, obs 3 / act 1; Reacher, obs 10 /
act 2, its reward weights x5), so padding, the slice f^k and the mask g^k are exercised end to end.

K=2 TD3 teachers are trained as one batched model (64×64, cached for the module). Returns are compared as the
normalised score

    score_k = (R_student,k - R_random,k) / (R_teacher,k - R_random,k),

each return the mean over the same 10 evaluation episodes (same seeds) per task; the student's is its max average
reward over its evaluations (the paper's metric), the teachers' that of the final teachers it learns from.

* offline stage alone (Eq. 1–2, no environment interaction): ≥ 0.9 on every task;
* online stage alone from a fresh student (``offline_steps=0``): teacher-guided (α=1, Eq. 5) reaches ≥ 0.9 on every
  task within a budget at which plain multi-task TD3 (α=0: the teacher term removed, same seeds) is far below on
  Pendulum — the test fails if the method is replaced by its null.
"""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule
from torchrl.envs.utils import RandomPolicy

from tdmt.algos import ktm_drl, teachers
from tdmt.algos.td3_common import EVAL_SEED
from tdmt.envs import get_suite, make_env
from tdmt.eval import evaluate
from tdmt.modules.teachers import StackedTeachers

SUITE, EPISODES, SEED = "control-mt2", 10, 0


@pytest.fixture(scope="module")
def control_teachers(tmp_path_factory):
    """Two TD3 teachers trained together, and the teachers' and a random policy's returns on the eval episodes."""
    run_dir = tmp_path_factory.mktemp("control_teachers")
    cfg = teachers.Config(suite=SUITE, seed=SEED, run_dir=str(run_dir), total_steps=8000, start_steps=1000,
                          hidden=(64, 64), batch_size_per_task=128, lr=1e-3, buffer_size_per_task=10_000,
                          eval_every=0, eval_episodes=EPISODES, checkpoint_every=0, progress=False)
    teachers.run(cfg)
    folder = teachers.teachers_dir(run_dir)
    suite = get_suite(SUITE)
    stacked = StackedTeachers.load(folder, suite.task_names, suite.obs_max, suite.act_max)
    teacher = _returns(TensorDictModule(stacked, in_keys=["observation"], out_keys=["action"]))
    torch.manual_seed(0)
    random = _returns(RandomPolicy(make_env(SUITE, num_envs_per_task=EPISODES).action_spec))
    assert torch.all(teacher > random + torch.tensor([600.0, 100.0])), \
        f"teachers did not learn: {teacher.tolist()} vs random {random.tolist()}"
    return folder, teacher, random


def _returns(policy) -> torch.Tensor:
    env = make_env(SUITE, seed=EVAL_SEED + SEED, num_envs_per_task=EPISODES)
    out = torch.tensor(evaluate(env, policy).return_mean)
    env.close()
    return out


def _score(cfg: ktm_drl.Config, control_teachers) -> torch.Tensor:
    """Run ``cfg``; its normalised score per task."""
    _, teacher, random = control_teachers
    summary = ktm_drl.run(cfg)
    student = torch.tensor(list(summary["max_average_reward"][cfg.label].values()))
    score = (student - random) / (teacher - random)
    print(f"{cfg.label}: student {student.tolist()} teacher {teacher.tolist()} random {random.tolist()} "
          f"score {score.tolist()}")
    return score


@pytest.mark.slow
def test_offline_stage_alone_reaches_90_percent_of_teachers(control_teachers, tmp_path):
    cfg = ktm_drl.Config(suite=SUITE, seed=SEED, run_dir=str(tmp_path / "offline"),
                         teachers_dir=str(control_teachers[0]), offline_steps=1500, online_steps=0, hidden=(128, 128),
                         batch_size_per_task=256, lr=1e-3, eval_every=250, eval_episodes=EPISODES,
                         checkpoint_every=0, progress=False)
    score = _score(cfg, control_teachers)
    assert torch.all(score >= 0.9), f"normalised scores {score.tolist()}"


def _online(alpha: float, control_teachers, tmp_path) -> torch.Tensor:
    """A fresh student (no offline stage) learning online for 2500 epochs, teacher-guided with weight ``alpha``."""
    cfg = ktm_drl.Config(suite=SUITE, seed=SEED, run_dir=str(tmp_path / f"online-alpha{alpha}"),
                         teachers_dir=str(control_teachers[0]), offline_steps=0, online_steps=2500,
                         learning_starts=200, alpha=alpha, hidden=(128, 128), batch_size_per_task=128, lr=1e-3,
                         buffer_size_per_task=10_000, eval_every=250, eval_episodes=EPISODES, checkpoint_every=0,
                         progress=False)
    return _score(cfg, control_teachers)


@pytest.mark.slow
def test_online_stage_teacher_guided_beats_plain_multitask_td3(control_teachers, tmp_path):
    guided = _online(1.0, control_teachers, tmp_path)
    plain = _online(0.0, control_teachers, tmp_path)
    assert torch.all(guided >= 0.9), f"teacher-guided online (α=1): normalised scores {guided.tolist()}"
    assert plain.min() < 0.5, f"plain multi-task TD3 (α=0) is not clearly below: {plain.tolist()}"
    assert (guided - plain).max() > 0.5, f"α=1 {guided.tolist()} vs α=0 {plain.tolist()}"
