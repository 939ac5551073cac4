"""The three Arora et al. recipes end to end at tiny budgets: files, tables, resume, fine-tuning freezes the trunk."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdmt.algos import a2c_multitask, distill_kl, finetune, get_recipe
from tdmt.config import parse_args

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["PendulumGravityLow", "PendulumGravityNormal", "PendulumGravityHigh"]
TINY = dict(suite="pendulum-mt3", num_envs_per_task=2, eval_episodes=1, log_every=10)


def _steps(path: Path) -> list[int]:
    return [int(float(r.split(",")[0])) for r in path.read_text().splitlines()[1:]]


def _table_row(results: str, task: str, table: str = "### final return") -> list[str]:
    """The cells of ``task``'s row in the results table whose title starts with ``table``."""
    lines = results.split(table, 1)[1].splitlines()
    line = next(x for x in lines if x.startswith(f"| {task} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_recipes_are_registered():
    assert get_recipe("a2c_multitask") is a2c_multitask
    assert get_recipe("distill_kl") is distill_kl
    assert get_recipe("finetune") is finetune


def test_a2c_multitask_writes_results_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "a2c"
    cfg = a2c_multitask.Config(**TINY, run_dir=str(run_dir), total_steps=40, eval_every=20, checkpoint_every=20)
    summary = a2c_multitask.run(cfg)
    for name in ("config.yaml", "metrics.csv", "eval.csv", "results.md", "curves.png", "summary.json", "model.pt"):
        assert (run_dir / name).exists(), name
    assert set(summary) >= {f"eval/{t}/return" for t in TASKS}
    assert -2000 < summary["eval/mean_return"] < 0  # Pendulum returns are negative
    results = (run_dir / "results.md").read_text()
    assert "| task | Vanilla multi-task (40 frames per task) |" in results  # the report of this one run
    final = float(summary["eval/PendulumGravityHigh/return"])  # its final evaluation, ± over its episodes
    assert _table_row(results, "PendulumGravityHigh")[1].startswith(f"{final:.1f} ± ")
    assert _steps(run_dir / "eval.csv") == [20, 40]
    # a longer budget on the same folder resumes from the step-40 checkpoint instead of starting over
    a2c_multitask.run(a2c_multitask.Config(**{**cfg.__dict__, "total_steps": 60}))
    assert f"resumed {run_dir} from step 40" in capsys.readouterr().out
    assert _steps(run_dir / "metrics.csv") == [10, 20, 30, 40, 50, 60]
    assert _steps(run_dir / "eval.csv") == [20, 40, 60]


@pytest.mark.parametrize("teacher_algo", ["sac", "a2c"])
def test_distill_kl_trains_teachers_then_student(tmp_path, teacher_algo):
    run_dir = tmp_path / teacher_algo
    cfg = distill_kl.Config(**TINY, run_dir=str(run_dir), teacher_algo=teacher_algo, teacher_total_steps=20,
                            teacher_envs_per_task=2, sac_random_frames=10, sac_batch_size_per_task=8,
                            sac_hidden=(16, 16), total_steps=20, p_student=0.5, eval_every=0, checkpoint_every=10)
    summary = distill_kl.run(cfg)
    assert (run_dir / "teachers" / "model.pt").exists() and (run_dir / "teachers" / "summary.json").exists()
    for name in ("metrics.csv", "eval.csv", "results.md", "curves.png", "summary.json", "model.pt"):
        assert (run_dir / name).exists(), name
    student = torch.load(run_dir / "model.pt")
    teachers = torch.load(run_dir / "teachers" / "model.pt")
    assert set(student) == ({"actor", "obs_norm"} if teacher_algo == "a2c" else {"actor"})
    if teacher_algo == "a2c":  # the student is saved with the (frozen) statistics its teachers were trained with
        assert all(torch.equal(student["obs_norm"][k], teachers["obs_norm"][k]) for k in teachers["obs_norm"])
    results = (run_dir / "results.md").read_text()
    label = "Scratch" if teacher_algo == "a2c" else "Teachers (SAC)"
    assert f"{label} (20 frames per task)" in results and "Distillation multi-task (20 frames per task)" in results
    assert "Normalised score" in results
    for t in TASKS:
        assert summary[f"random/{t}/return"] < 0
        expected = (summary[f"eval/{t}/return"] - summary[f"random/{t}/return"]) / (
            summary[f"teacher/{t}/return"] - summary[f"random/{t}/return"])
        assert summary[f"normalised/{t}"] == pytest.approx(expected)
    assert json.loads((run_dir / "summary.json").read_text())["teacher_algo"] == teacher_algo


def test_distill_kl_resumes_the_student_and_reuses_finished_teachers(tmp_path, capsys):
    run_dir = tmp_path / "distill"
    cfg = distill_kl.Config(**TINY, run_dir=str(run_dir), teacher_algo="sac", teacher_total_steps=20,
                            sac_random_frames=10, sac_batch_size_per_task=8, sac_hidden=(16, 16), total_steps=20,
                            eval_every=0, checkpoint_every=10)
    distill_kl.run(cfg)
    teachers = (run_dir / "teachers" / "model.pt").read_bytes()
    capsys.readouterr()
    distill_kl.run(distill_kl.Config(**{**cfg.__dict__, "total_steps": 30}))
    out = capsys.readouterr()
    assert f"resumed {run_dir} from step 20" in out.out
    assert "sac teachers" not in out.err  # no teacher training bar: the finished teachers were loaded
    assert (run_dir / "teachers" / "model.pt").read_bytes() == teachers
    assert _steps(run_dir / "metrics.csv") == [10, 20, 30]


def test_finetune_script_trains_only_the_finetuned_layers_on_the_target_task(tmp_path):
    run_dir = tmp_path / "ft"
    cmd = [sys.executable, "recipes/finetune.py", "config=recipes/configs/arora_finetune_demo.yaml",
           "suite=pendulum-mt3", "source_task=PendulumGravityLow", "target_task=PendulumGravityHigh",
           "source_frames=20", "target_frames=20", "num_envs_per_task=2", "eval_every=0", "eval_episodes=1",
           "log_every=10", f"run_dir={run_dir}"]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True,
                   timeout=300)
    source = torch.load(run_dir / "source" / "model.pt")
    target = torch.load(run_dir / "target" / "model.pt")
    for part in ("actor", "critic"):
        for name, value in source[part].items():
            same = torch.equal(value, target[part][name])
            # the public code's layers: the actor's last hidden layer (trunk.1), mean head, log-std; the value head
            tuned = ".head." in name or "log_std" in name or (part == "actor" and ".trunk.1." in name)
            assert same != tuned, f"{part} {name}"
    # the observation statistics keep counting on E2 (buffers of the network, as in the public code)
    assert target["obs_norm"]["count"] > source["obs_norm"]["count"]
    assert (run_dir / "scratch_target" / "model.pt").exists()
    results = (run_dir / "results.md").read_text()
    assert "| Scratch | 20 |" in results and "| Scratch | 20 | — |" not in results  # E2 cell: scratch on E2
    assert "| E1 → E2 | 20 |" in results
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= {f"{p}/{t}/return" for p in ("source", "finetuned")
                            for t in ("PendulumGravityLow", "PendulumGravityHigh")}
    assert "scratch/PendulumGravityHigh/return" in summary
    assert (run_dir / "curves.png").exists()


@pytest.mark.parametrize("recipe, name", [(a2c_multitask, "a2c"), (distill_kl, "distill"), (finetune, "finetune")])
def test_demo_configs_parse(recipe, name):
    cfg = parse_args(recipe.Config, [f"config={ROOT}/recipes/configs/arora_{name}_demo.yaml"])
    assert cfg.eval_episodes == 20


def test_bad_config_values_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"direction='sideways'.*'forward', 'reverse'"):
        parse_args(distill_kl.Config, ["direction=sideways"])
    with pytest.raises(ValueError, match=r"p_student=1.5 is out of range; valid: \[0, 1\]"):
        parse_args(distill_kl.Config, ["p_student=1.5"])
    with pytest.raises(ValueError, match=r"update='random'.*'cycle', 'joint'"):
        parse_args(a2c_multitask.Config, ["update=random"])
    with pytest.raises(ValueError, match=r"unknown task 'Nope'.*HalfCheetahSmallFoot"):
        parse_args(finetune.Config, ["target_task=Nope"])
    with pytest.raises(ValueError, match=r"critic_shared_layers=3 is out of range; valid: 0..2"):
        parse_args(a2c_multitask.Config, ["critic_shared_layers=3"])
    with pytest.raises(ValueError, match=r"policy='beta'.*'gaussian', 'tanh_normal'"):
        parse_args(a2c_multitask.Config, ["policy=beta"])
    with pytest.raises(ValueError, match="must differ"):
        parse_args(finetune.Config, ["target_task=HalfCheetahSmallFoot"])


def test_model_pt_reloads_into_the_policy_that_was_evaluated(tmp_path):
    """``model.pt`` holds the weights and the observation statistics: the reloaded policy, acting on raw
    observations, reproduces the run's final evaluation exactly."""
    from tdmt.envs import make_env
    from tdmt.eval import evaluate

    cfg = a2c_multitask.Config(**{**TINY, "eval_episodes": 3}, run_dir=str(tmp_path / "a2c"), total_steps=200,
                               eval_every=0, checkpoint_every=0, progress=False)
    summary = a2c_multitask.run(cfg)
    policy = a2c_multitask.load_model_policy(cfg, str(tmp_path / "a2c" / "model.pt"))
    env = make_env(cfg.suite, seed=cfg.seed + 10_000, num_envs_per_task=3, task_onehot=False)
    result = evaluate(env, policy)
    env.close()
    for task, ret in zip(result.task_names, result.return_mean):
        assert ret == pytest.approx(summary[f"eval/{task}/return"], abs=1e-3)
