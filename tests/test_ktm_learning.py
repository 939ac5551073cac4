"""Learning test (slow, runs in CI): KTM-DRL's offline stage alone transfers K teachers into one student.

On ``pendulum-mt3`` (Pendulum-v1 at g = 6, 10, 14), K=3 TD3 teachers are trained as one batched model (64×64,
cached for the session), then the student is trained by the offline stage only (Eq. 1–2, no environment
interaction) from the teachers' own replay buffers. Pendulum returns are negative (random ≈ -1200, solved ≈ -150),
so "≥ 90% of the teacher's return" is measured as the normalised score

    score_k = (R_student,k - R_random,k) / (R_teacher,k - R_random,k) ≥ 0.9   for every task k,

each return being the mean over the same 10 evaluation episodes (same seeds) per task; the student's is its max
average reward over the offline stage's evaluations (every 500 steps; the paper's metric), the teachers' is that
of the final teachers it learns from.
"""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule
from torchrl.envs.utils import RandomPolicy

from tdmt.algos import ktm_drl, teachers
from tdmt.algos.td3_common import EVAL_SEED
from tdmt.envs import make_env
from tdmt.eval import evaluate
from tdmt.modules.teachers import StackedTeachers

SUITE, EPISODES, SEED = "pendulum-mt3", 10, 0


@pytest.fixture(scope="session")
def pendulum_teachers(tmp_path_factory):
    """Three TD3 teachers trained together (cached for the session)."""
    run_dir = tmp_path_factory.mktemp("pendulum_teachers")
    cfg = teachers.Config(suite=SUITE, seed=SEED, run_dir=str(run_dir), steps=7000, start_steps=1000,
                          hidden=(64, 64), batch_size=128, lr=1e-3, buffer_size=10_000, eval_every=7000,
                          eval_episodes=EPISODES, checkpoint_every=0, progress=False)
    teachers.run(cfg)
    return teachers.teachers_dir(run_dir)


def _returns(policy) -> torch.Tensor:
    env = make_env(SUITE, seed=EVAL_SEED + SEED, num_envs_per_task=EPISODES)
    out = torch.tensor(evaluate(env, policy).return_mean)
    env.close()
    return out


@pytest.mark.slow
def test_offline_stage_alone_reaches_90_percent_of_teachers(pendulum_teachers, tmp_path):
    cfg = ktm_drl.Config(suite=SUITE, seed=SEED, run_dir=str(tmp_path / "ktm"), teachers_dir=str(pendulum_teachers),
                         offline_steps=3000, online_steps=0, hidden=(64, 64), batch_size=256, lr=1e-3,
                         eval_every=500, eval_episodes=EPISODES, checkpoint_every=0, progress=False)
    summary = ktm_drl.run(cfg)
    student = torch.tensor(list(summary["max_average_reward"][cfg.label].values()))
    env = make_env(SUITE)
    stacked = StackedTeachers.load(pendulum_teachers, env.suite.task_names, env.suite.obs_max, env.suite.act_max)
    teacher = _returns(TensorDictModule(stacked, in_keys=["observation"], out_keys=["action"]))
    torch.manual_seed(0)
    random = _returns(RandomPolicy(make_env(SUITE, num_envs_per_task=EPISODES).action_spec))
    score = (student - random) / (teacher - random)
    print(f"student {student.tolist()} teacher {teacher.tolist()} random {random.tolist()} score {score.tolist()}")
    assert torch.all(teacher > random + 300), f"teachers did not learn: {teacher.tolist()} vs random {random.tolist()}"
    assert torch.all(score >= 0.9), f"normalised scores {score.tolist()} (student {student.tolist()}, teacher " \
                                    f"{teacher.tolist()}, random {random.tolist()})"
