from dataclasses import dataclass
from typing import Literal

import pytest
import torch

from tdmt.config import parse_args
from tdmt.envs import make_env
from tdmt.eval import evaluate, first_episode_mask
from tdmt.logger import CSVLog


@dataclass
class _Cfg:
    suite: str = "pendulum-mt3"
    lr: float = 3e-4
    mode: Literal["offline", "online"] = "offline"
    hidden: tuple[int, ...] = (400, 400)
    budget: int | None = None


def test_overrides_and_files(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.001\nhidden: [64, 64]\n")
    cfg = parse_args(_Cfg, [f"config={f}", "mode=online", "budget=5", "lr=1"])
    assert cfg == _Cfg(lr=1.0, mode="online", hidden=(64, 64), budget=5)
    assert parse_args(_Cfg, ["lr=1e-3"]).lr == 0.001  # YAML 1.1 reads 1e-3 as a string


@pytest.mark.parametrize("arg,message", [
    ("lrr=1", r"unknown config key 'lrr'.*valid keys: \['budget', 'hidden', 'lr', 'mode', 'suite'\]"),
    ("mode=both", r"mode='both' is not a valid choice; valid: \['offline', 'online'\]"),
    ("lr=fast", r"lr='fast' should be of type float"),
    ("budget", r"key=value pairs, got 'budget'"),
])
def test_bad_overrides_name_the_problem(arg, message):
    with pytest.raises((KeyError, ValueError, TypeError), match=message):
        parse_args(_Cfg, [arg])


def test_help_lists_every_key_with_its_default(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(_Cfg, ["lr=1", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "  lr=0.0003" in out and "  mode='offline'" in out and "  hidden=(400, 400)" in out


def test_csv_log_grows_header_and_truncates(tmp_path):
    log = CSVLog(tmp_path / "m.csv")
    log.log(1, loss=0.5)
    log.log(2, loss=0.4, eval=3.0)
    log.log(3, loss=0.3)
    rows = CSVLog(tmp_path / "m.csv").rows()
    assert [r["step"] for r in rows] == ["1", "2", "3"] and rows[0]["eval"] == "" and rows[1]["eval"] == "3.0"
    log.truncate_after(2)
    assert [r["step"] for r in log.rows()] == ["1", "2"]


def test_first_episode_mask():
    done = torch.tensor([[0, 0, 1, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    assert first_episode_mask(done).tolist() == [[True, True, True, False, False], [True] * 5]


def test_evaluate_counts_one_episode_per_row():
    env = make_env("pendulum-mt3", seed=0, num_envs_per_task=2)
    result = evaluate(env, lambda td: td.set("action", torch.zeros(*td.batch_size, 1)))
    assert result.task_names == env.suite.task_names and result.success_rate is None
    # Pendulum reward is in [-16.3, 0] per step over 200 steps
    assert all(-16.3 * 200 <= r <= 0 for r in result.return_mean)
    row = result.as_row()
    assert row["eval/mean_return"] == pytest.approx(sum(result.return_mean) / 3)
