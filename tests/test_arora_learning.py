"""Learning test: a multi-head student distilled with the KL-Gaussian loss reaches its teachers' return on each task.

Suite ``pendulum-mt3`` (Pendulum at g = 6, 10, 14). Pendulum returns are negative, so "≥ 90 % of the teacher's
return" is measured as the normalised score ``(R_student − R_random) / (R_teacher − R_random) ≥ 0.9`` (1 = the
teacher's return, 0 = a uniform random policy's), on the same evaluation episodes for all three.

Teachers: K per-task Gaussian actors (the recipe's SAC teacher architecture, 2×64 ReLU, TanhNormal), trained in a
few seconds by minimising ``kl_diag_gaussian`` to a Gaussian (σ = 0.2, pre-squash) around an energy-pumping +
PD swing-up controller, on random states. RL teachers (the recipe's SAC or the paper's A2C) take minutes on this
2-core CPU; the test is about the distillation, which only needs good Gaussian teachers. The student is then
trained by the ``distill_kl`` recipe itself (teachers loaded with ``teacher_path``).
"""

import math

import pytest
import torch
from tensordict import TensorDict

from tdmt.algos import distill_kl
from tdmt.envs import get_suite, make_env
from tdmt.envs.variants import PENDULUM_GRAVITY
from tdmt.objectives import kl_diag_gaussian

SUITE = "pendulum-mt3"


def swing_up(observation: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
    """Energy pumping towards the upright energy, blended smoothly into PD near the top; action = torque / 2."""
    gravity = torch.tensor(list(PENDULUM_GRAVITY.values()))[task_id]
    cos, sin, omega = observation.unbind(-1)
    a = 1.5 * gravity  # θ'' = a sin θ + 3 u  ⇒  H = ω²/2 + a cos θ is pumped up to its upright value a
    energy = 0.5 * omega**2 + a * cos
    near_top = torch.sigmoid(40 * (cos - 0.85))
    torque = near_top * -(10 * torch.atan2(sin, cos) + 2 * omega) + (1 - near_top) * omega * (a - energy)
    return (torque / 2).clamp(-1, 1)


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory) -> str:
    torch.manual_seed(0)
    cfg = distill_kl.Config(suite=SUITE, teacher_algo="sac", sac_hidden=(64, 64))
    env = make_env(SUITE, task_onehot=False)
    teacher = distill_kl.make_teacher_actor(cfg, env)
    env.close()
    opt = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    K, N = get_suite(SUITE).num_tasks, 512
    task_id = torch.arange(K).view(K, 1).expand(K, N)
    for _ in range(1000):
        theta, omega = torch.rand(K, N) * 2 * math.pi - math.pi, torch.rand(K, N) * 16 - 8
        obs = torch.stack([theta.cos(), theta.sin(), omega], -1)
        target = torch.atanh(swing_up(obs, task_id).clamp(-0.995, 0.995)).unsqueeze(-1)
        out = teacher.get_dist_params(TensorDict(observation=obs, task_id=task_id, batch_size=[K, N]))
        loss = kl_diag_gaussian(target, torch.full_like(target, 0.2), out["loc"], out["scale"]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("arora_teachers") / "model.pt"
    torch.save({"actor": teacher.state_dict()}, path)
    return str(path)


@pytest.mark.slow
def test_distilled_student_reaches_90_percent_of_teachers_on_every_task(teacher_path, tmp_path):
    cfg = distill_kl.Config(suite=SUITE, teacher_algo="sac", sac_hidden=(64, 64), teacher_path=teacher_path,
                            run_dir=str(tmp_path / "distill"), frames_per_task=24_000, num_envs_per_task=8,
                            p_student=0.5, lr=3e-3, lr_schedule="linear", eval_every=0, eval_episodes=30,
                            log_every=2000, checkpoint_every=0)
    summary = distill_kl.run(cfg)
    for task in get_suite(SUITE).task_names:
        teacher, random = summary[f"teacher/{task}/return"], summary[f"random/{task}/return"]
        assert teacher > -350 and teacher - random > 700, (task, teacher, random)  # the teachers swing up
        assert summary[f"normalised/{task}"] >= 0.9, (task, summary[f"eval/{task}/return"], teacher, random)
