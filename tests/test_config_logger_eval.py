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
    assert "  lr=0.0003  [float; > 0]" in out and "  mode='offline'  [choice; one of offline, online]" in out
    assert "  hidden=[400, 400]  [list; sizes >= 1]" in out


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


def _tb_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard events under ``folder``, as TensorBoard itself reads them back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logger_mirrors_the_csv_rows_and_resumes_cleanly(tmp_path):
    pytest.importorskip("tensorboard", reason="logger=tensorboard needs the tensorboard package (pip install .[dev])")
    from tdmt.algos.run import TrainingRun
    from tdmt.config import BaseConfig

    cfg = BaseConfig(suite="pendulum-mt3", run_dir=str(tmp_path / "run"), logger=("csv", "tensorboard"))
    run = TrainingRun(cfg.run_dir, cfg)
    for step in (1, 2, 3):
        run.metrics.log(step, loss=0.5 / step, stage="offline")  # text columns stay in the CSV only
        run.evals.log(step, **{"eval/mean_return": -100.0 * step})
        if step == 2:
            run.save(step, lambda: {"n": 2})
    run.lock.release()
    scalars = _tb_scalars(tmp_path / "run" / "tensorboard")
    assert sorted(scalars) == ["eval/mean_return", "loss"]
    assert scalars["loss"] == [(1, 0.5), (2, 0.25), (3, pytest.approx(0.5 / 3))]
    assert [s for s, _ in scalars["eval/mean_return"]] == [1, 2, 3]
    assert run.metrics.rows()[2]["stage"] == "offline" and float(run.evals.rows()[2]["eval/mean_return"]) == -300
    # resume from step 2: the first attempt's step 3 is dropped by TensorBoard's reader, the new one kept
    again = TrainingRun(cfg.run_dir, cfg)
    assert again.resume(lambda state: None) == 2
    again.metrics.log(3, loss=7.0)
    again.lock.release()
    assert _tb_scalars(tmp_path / "run" / "tensorboard")["loss"] == [(1, 0.5), (2, 0.25), (3, 7.0)]
    assert [r["loss"] for r in again.metrics.rows()] == ["0.5", "0.25", "7.0"]


def test_wandb_offline_logger_writes_its_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed here: logger=wandb is tested where it is")
    from tdmt.logger import MetricsLog, RunLoggers

    monkeypatch.delenv("WANDB_MODE", raising=False)
    loggers = RunLoggers(("csv", "wandb"), tmp_path, exp_name="t")
    MetricsLog(tmp_path / "metrics.csv", loggers).log(1, loss=0.5)
    loggers.close()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_mlflow_logger_writes_its_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed here: logger=mlflow is tested where it is")
    from tdmt.logger import MetricsLog, RunLoggers

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    loggers = RunLoggers(("csv", "mlflow"), tmp_path, exp_name="t")
    MetricsLog(tmp_path / "eval.csv", loggers).log(3, **{"eval/mean_return": -5.0})
    loggers.close()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/mean_return")] == [(3, -5.0)]


def test_missing_logger_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    from tdmt.logger import RunLoggers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ValueError, match=r"logger=mlflow needs the mlflow package, which is not installed"):
        RunLoggers(("csv", "mlflow"), tmp_path)
    with pytest.raises(ValueError, match=r"logger=\['csv', 'neptune'\] is not valid; valid: one or more of"):
        RunLoggers(("csv", "neptune"), tmp_path)
