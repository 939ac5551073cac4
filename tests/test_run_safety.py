"""Run folders a user can trust: one folder per configuration, a lock per folder, config-checked resume, and
Ctrl-C that ends in one line and a resumable run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tdmt.algos.run import TrainingRun
from tdmt.config import BaseConfig, apply_overrides, parse_args
from tdmt.errors import UserError, cli_errors
from tests import toy_recipe

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@dataclasses.dataclass
class _Cfg(BaseConfig):
    alpha: float = 1.0
    total_steps: int = 100


def test_default_folders_differ_by_configuration_not_by_budget_or_device():
    base = _Cfg(suite="pendulum-mt3")
    ablation = apply_overrides(base, {"alpha": 0.0})
    longer = apply_overrides(base, {"total_steps": 500, "device": "cpu", "threads": 2})
    other_seed = apply_overrides(base, {"seed": 1})
    assert base.resolved_run_dir() != ablation.resolved_run_dir()
    assert "alpha=0.0" in ablation.resolved_run_dir()
    assert base.resolved_run_dir() == longer.resolved_run_dir()
    assert base.resolved_run_dir() != other_seed.resolved_run_dir()
    assert base.resolved_run_dir().startswith(os.path.join("runs", "test_run_safety", "pendulum-mt3", "seed0-"))


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    code = ("import sys, time; from tdmt.algos.run import TrainingRun; TrainingRun(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_is_refused_then_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = _hold_lock(run_dir)
    try:
        (run_dir / "metrics.csv").write_text("step,x\n1,2\n")
        with pytest.raises(UserError, match=rf"in use by PID {holder.pid} on host {socket.gethostname()}"):
            TrainingRun(run_dir, toy_recipe.Config(run_dir=str(run_dir)))
        assert (run_dir / "metrics.csv").read_text() == "step,x\n1,2\n"  # the holder's files are untouched
        assert not (run_dir / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    TrainingRun(run_dir).lock.release()
    assert f"took over the lock of {run_dir} from PID {holder.pid}" in capsys.readouterr().out


def test_changed_config_is_refused_naming_the_keys_and_a_larger_budget_resumes(tmp_path):
    run_dir = str(tmp_path / "toy")
    cfg = toy_recipe.Config(run_dir=run_dir, total_steps=60, checkpoint_every=30, eval_every=30)
    first = toy_recipe.run(cfg)
    saved = (Path(run_dir) / "config.yaml").read_text()
    for change, named in (({"lr": 5e-3}, "lr: 0.001 -> 0.005"),
                          ({"total_steps": 30}, "total_steps: 60 -> 30 (a step budget can only grow")):
        with pytest.raises(UserError, match=named.replace("(", r"\(")):
            toy_recipe.run(dataclasses.replace(cfg, **change))
        assert (Path(run_dir) / "config.yaml").read_text() == saved  # never rewritten before the check
    longer = toy_recipe.run(dataclasses.replace(cfg, total_steps=90))
    assert first["steps"] == 60 and longer["resumed_from"] == 60 and longer["steps"] == 90
    assert json.loads((Path(run_dir) / "state.json").read_text())["state"] == "done"


def test_ctrl_c_prints_one_line_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "toy"
    args = [sys.executable, str(ROOT / "tests" / "toy_recipe.py"), f"run_dir={run_dir}", "total_steps=400",
            "checkpoint_every=1000", "eval_every=100", "step_delay_s=0.02"]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("toy:")]
    assert len(lines) == 1 and "stopped at step" in lines[0] and "run the same command to resume" in lines[0]
    state = json.loads((run_dir / "state.json").read_text())
    step = int(lines[0].split("stopped at step ")[1].split()[0])
    assert state["state"] == "stopped" and state["step"] == step and 0 < step < 400
    done = subprocess.run(args[:-1], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed {run_dir} from step {step}" in done.stdout
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from"] == step


@pytest.mark.parametrize("argv, named", [
    (["gamma=2.5"], "gamma=2.5 is out of range; valid: [0, 1)"),
    (["lr=0"], "lr=0.0 is out of range; valid: > 0"),
    (["total_steps=0"], "total_steps=0 is out of range; valid: >= 1"),
    (["steps=10"], "config key 'steps' was renamed; use total_steps=10"),
    (["nonsense=1"], "unknown config key 'nonsense' for toy"),
    (["logger=[csv,nope]"], "logger=['csv', 'nope'] is not valid"),
    (["device=gpu"], "device='gpu' is not valid; valid: cpu, cuda, cuda:N"),
    (["suite=nope"], "unknown suite 'nope'"),
])
def test_bad_values_are_one_line_and_exit_2(argv, named, capsys):
    with pytest.raises(SystemExit) as stop, cli_errors("toy"):
        parse_args(_ToyCfg, argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.count("\n") == 1 and err.startswith("toy: ") and named in err, err


def test_a_recipe_script_refuses_a_bad_value_in_one_line_before_any_work(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "recipes" / "sac_mt.py"), "tau=0", f"run_dir={tmp_path}/r"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr == "sac_mt: tau=0.0 is out of range; valid: (0, 1]\n"
    assert not (tmp_path / "r").exists()


@dataclasses.dataclass
class _ToyCfg(BaseConfig):
    """A recipe config for the one-line-error test."""

    suite: str = "pendulum-mt3"
    gamma: float = 0.99
    lr: float = 1e-3
    total_steps: int = 10

    @classmethod
    def recipe_name(cls) -> str:
        return "toy"


def test_debug_shows_the_traceback():
    code = ("import sys; from tdmt.errors import cli_errors; from tdmt.config import parse_args; "
            "from tests.test_run_safety import _ToyCfg; "
            "exec('with cli_errors(\"toy\"):\\n    parse_args(_ToyCfg, sys.argv[1:])')")
    out = subprocess.run([sys.executable, "-c", code, "gamma=2"], env={**ENV, "TDMT_DEBUG": "1"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" in out.stderr and "gamma=2.0 is out of range" in out.stderr
