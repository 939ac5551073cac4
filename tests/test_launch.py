"""Sweep launcher: spec validation before submission, the grid layout, skip-if-done, status, report, and a real
preemption + requeue through submitit's local executor."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from tdmt import cli
from tdmt import launch as launch_mod
from tdmt.aggregate import report
from tdmt.launch import (
    SweepSpecError,
    _expand_array_ids,
    element_status,
    launch,
    load_spec,
    read_job_file,
    sweep_status,
    wait,
)
from tdmt.logger import CSVLog

TOY = "tests.toy_recipe"


def _spec(tmp_path, **kw) -> dict:
    spec = {"name": "s", "root": str(tmp_path / "runs"), "suites": ["pendulum-mt3"], "seeds": [0, 1],
            "overrides": {"total_steps": 30, "eval_every": 15, "checkpoint_every": 10},
            "methods": {TOY: {"variants": {"small": {"hidden": 8}, "wide": {"hidden": 32}}}}, "executor": "debug"}
    spec.update(kw)
    return spec


@pytest.mark.parametrize("change, message", [
    ({"methods": {"nosuch_recipe": {}}}, "unknown recipe 'nosuch_recipe'"),
    ({"suites": ["pendulum-mt3", "cheetah-mt99"]}, "unknown suite(s) ['cheetah-mt99']"),
    ({"methods": {TOY: {"variants": {"bad": {"hiden": 8}}}}}, f"methods.{TOY}.variants.bad"),
    ({"overrides": {"seed": 4}}, "['seed'] are set by the sweep grid"),
    ({"executor": "cloud"}, "executor='cloud' is not valid; valid: ['local', 'slurm', 'debug']"),
    ({"slurm": {"gpus": 1}}, "slurm: unknown config key 'gpus'"),
    ({"seedz": [0]}, "unknown sweep spec keys ['seedz']"),
    ({"seeds": [0, 0]}, "seeds=[0, 0] repeats [0]; give each at most once"),
    ({"slurm": {"mem_gb": -4}}, "slurm: mem_gb=-4.0 is out of range; valid: > 0"),
    ({"local": {"parallelism": 0}}, "local: parallelism=0 is out of range; valid: >= 1"),
    ({"slurm": {"gpus_per_task": -1}}, "slurm: gpus_per_task=-1 is out of range; valid: >= 0"),
])
def test_bad_spec_fails_before_anything_is_submitted(tmp_path, change, message):
    data = _spec(tmp_path, **{"executor": "slurm", **change})
    with pytest.raises(SweepSpecError) as info:
        launch(load_spec(None, [f"{k}={json.dumps(v)}" for k, v in data.items()]))
    assert message in str(info.value)
    if "hiden" in str(data):
        assert "unknown config key 'hiden'" in str(info.value) and "'hidden'" in str(info.value)
    assert not (tmp_path / "runs").exists()  # nothing written, nothing submitted


def test_debug_sweep_layout_resolved_configs_skip_done_status_and_report(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(tmp_path)))
    assert cli.main(["sweep", str(spec_file)]) == 0
    sweep = tmp_path / "runs" / "s"
    for variant, hidden in (("small", 8), ("wide", 32)):
        for seed in (0, 1):
            run_dir = sweep / TOY / "pendulum-mt3" / variant / f"seed{seed}"
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
            assert (cfg["hidden"], cfg["seed"], cfg["total_steps"], cfg["run_dir"]) == (hidden, seed, 30, str(run_dir))
            assert json.loads((run_dir / "summary.json").read_text())["steps"] == 30
            assert read_job_file(run_dir)["state"] == "done"
    assert [s.state for s in sweep_status(sweep)] == ["done"] * 4
    assert [s.state for s in wait(sweep, poll_s=0.01, timeout_s=0)] == ["done"] * 4
    mtime = (sweep / TOY / "pendulum-mt3" / "small" / "seed0" / "summary.json").stat().st_mtime
    # Launching again submits nothing: every element is done.
    assert launch(load_spec(spec_file)) == []
    assert (sweep / TOY / "pendulum-mt3" / "small" / "seed0" / "summary.json").stat().st_mtime == mtime
    capsys.readouterr()
    assert cli.main(["status", str(sweep)]) == 0
    assert "0 pending, 0 running, 0 stopped, 4 done, 0 failed" in capsys.readouterr().out

    written = report(sweep)
    md = (sweep / "report" / "report.md").read_text()
    assert f"| task | {TOY} (hidden=32) | {TOY} (hidden=8) |" in md and "Seeds per method" in md
    rows = CSVLog(sweep / "report" / "pendulum-mt3_max_return.csv").rows()
    assert len(rows) == 3 * 2 and all(r["seeds"] == "2" for r in rows)
    # mean across seeds = mean of each seed's max average return
    per_seed = [max(float(r["eval/PendulumGravityLow/return"]) for r in
                    CSVLog(sweep / TOY / "pendulum-mt3" / "wide" / f"seed{s}" / "eval.csv").rows()) for s in (0, 1)]
    cell = next(r for r in rows if r["task"] == "PendulumGravityLow" and r["method"] == f"{TOY} (hidden=32)")
    assert float(cell["mean"]) == pytest.approx(sum(per_seed) / 2)
    assert float(cell["std"]) == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2)
    assert (sweep / "report" / "pendulum-mt3_curves.png").stat().st_size > 10_000 and len(written) == 4


def test_report_ratio_to_ideal_teachers(tmp_path):
    sweep = tmp_path / "sw"
    returns = {"train_teachers": [200.0, 300.0], "ktm_drl": [250.0, 250.0]}
    tasks = ["PendulumGravityLow", "PendulumGravityNormal", "PendulumGravityHigh"]
    for recipe, values in returns.items():
        for seed, value in enumerate(values):
            run_dir = sweep / recipe / "pendulum-mt3" / "default" / f"seed{seed}"
            run_dir.mkdir(parents=True)
            log = CSVLog(run_dir / "eval.csv")
            log.log(100, **{f"eval/{t}/return": value / 2 for t in tasks})  # max average return: the later one
            log.log(200, **{f"eval/{t}/return": value for t in tasks})
            (run_dir / "summary.json").write_text("{}")
    report(sweep)
    ratio = CSVLog(sweep / "report" / "pendulum-mt3_ratio.csv").rows()
    assert [r["method"] for r in ratio] == ["KTM-DRL"]
    # each ktm_drl seed: 250 / mean(200, 300) = 1.0
    assert float(ratio[0]["PendulumGravityLow"]) == pytest.approx(1.0) and float(ratio[0]["average"]) == 1.0
    md = (sweep / "report" / "report.md").read_text()
    assert "| task | Ideal | KTM-DRL |" in md and "250.0 ± 50.0" in md and "performance ratio" in md


def _wait_for(predicate, timeout_s: float, what: str):
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(what)


@pytest.mark.slow  # two fresh Python processes (imports: ~10 s each on a busy 2-core box)
def test_local_executor_preempted_element_requeues_resumes_and_failed_one_shows_its_log(tmp_path, capsys):
    data = _spec(tmp_path, executor="local", seeds=[0], local={"parallelism": 2},
                 overrides={"total_steps": 60, "eval_every": 20, "checkpoint_every": 10, "step_delay_s": 0.05},
                 methods={TOY: {"variants": {"ok": {}, "crash": {"crash_at_step": 25}}}})
    spec = load_spec(None, [f"{k}={json.dumps(v)}" for k, v in data.items()])
    thread = threading.Thread(target=launch, args=(spec,))
    thread.start()
    run_dir = Path(tmp_path / "runs" / "s" / TOY / "pendulum-mt3" / "ok" / "seed0")
    # Preempt the running element once it has a checkpoint: SIGUSR2, as SLURM sends before a time limit.
    _wait_for(lambda: (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").glob("step_*")),
              120, "no checkpoint written")
    first_pid = read_job_file(run_dir)["pid"]
    os.kill(first_pid, signal.SIGUSR2)
    thread.join(timeout=180)
    assert not thread.is_alive()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] >= 10 and (summary["steps"], summary["updates"]) == (60, 51)
    assert read_job_file(run_dir)["pid"] != first_pid  # a new process resumed it
    assert [int(r["step"]) for r in CSVLog(run_dir / "eval.csv").rows()] == [20, 40, 60]
    assert [int(r["step"]) for r in CSVLog(run_dir / "metrics.csv").rows()] == list(range(10, 61))

    statuses = {s.key.split("/")[2]: s for s in sweep_status(tmp_path / "runs" / "s")}
    assert statuses["ok"].state == "done" and statuses["crash"].state == "failed"
    assert "SimulatedCrash" in statuses["crash"].detail
    assert "SimulatedCrash" in Path(statuses["crash"].log.replace("_log.out", "_log.err")).read_text()
    capsys.readouterr()
    cli.main(["status", str(tmp_path / "runs" / "s")])
    out = capsys.readouterr().out
    assert "failed elements (logs):" in out and statuses["crash"].log in out


def test_status_from_sacct_states_job_files_and_collapsed_array_ids(tmp_path):
    assert _expand_array_ids("12_[0-2,5%4]") == ["12_0", "12_1", "12_2", "12_5"]
    assert _expand_array_ids("12_7") == ["12_7"]
    entry = {"key": "r/s/v/seed0", "run_dir": str(tmp_path),
             "jobs": [{"executor": "slurm", "job_id": "12_1", "log": "/logs/12_1_0_log.out"}]}
    for state, expected in [("PENDING", "pending"), ("REQUEUED", "pending"), ("RUNNING", "running"),
                            ("OUT_OF_MEMORY", "failed"), ("CANCELLED", "failed"), ("NODE_FAIL", "failed")]:
        assert element_status(entry, {"12_1": state}).state == expected
    timeout = element_status(entry, {"12_1": "TIMEOUT"})
    assert timeout.detail == "SLURM TIMEOUT" and timeout.log == "/logs/12_1_0_log.out"
    (tmp_path / "job.json").write_text(json.dumps({"state": "failed", "error": "ValueError: boom", "log": "/l.out"}))
    failed = element_status(entry, {"12_1": "COMPLETED"})
    assert (failed.state, failed.detail, failed.log) == ("failed", "ValueError: boom", "/l.out")
    local = {"key": "k", "run_dir": str(tmp_path), "jobs": [{"executor": "local", "controller_pid": 0}]}
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    here = socket.gethostname()
    (tmp_path / "job.json").write_text(json.dumps({"state": "running", "pid": dead, "host": here}))
    assert element_status(local, {}).detail == f"process {dead} died"
    (tmp_path / "job.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "host": here}))
    assert element_status(local, {}).state == "running"
    (tmp_path / "sweep.json").write_text(json.dumps({"elements": [local]}))
    with pytest.raises(TimeoutError, match="not finished after 0.1 s"):
        wait(tmp_path, poll_s=0.05, timeout_s=0.1)
    (tmp_path / "summary.json").write_text("{}")
    assert element_status(entry, {"12_1": "FAILED"}).state == "done"


def _staged(tmp_path, executor: str, **stage1) -> dict:
    return {"name": "staged", "root": str(tmp_path / "runs"), "suites": ["pendulum-mt3"], "seeds": [0, 1],
            "executor": executor, "scale": 0.1,
            "stages": {
                "first": {"methods": {TOY: {"overrides": {"total_steps": 300, "eval_every": 100,
                                                          "checkpoint_every": 100, **stage1},
                                            "variants": {"a": {"hidden": 8}}}}},
                "second": {"after": ["first"], "methods": {"tests.toy_consumer": {"overrides": {
                    "source": "{sweep}/" + TOY + "/{suite}/a/seed{seed}"}}}}}}


def test_stages_run_in_order_with_budgets_scaled(tmp_path):
    data = _staged(tmp_path, "debug")
    spec = load_spec(None, [f"{k}={json.dumps(v)}" for k, v in data.items()])
    assert [st.name for st in spec.stages] == ["first", "second"] and spec.scale == 0.1
    submitted = launch(spec)
    assert [e.stage for e in submitted] == ["first", "first", "second", "second"]
    sweep = tmp_path / "runs" / "staged"
    for seed in (0, 1):
        first = json.loads((sweep / TOY / "pendulum-mt3" / "a" / f"seed{seed}" / "summary.json").read_text())
        second = json.loads((sweep / "tests.toy_consumer" / "pendulum-mt3" / "default" / f"seed{seed}" /
                             "summary.json").read_text())
        assert first["steps"] == 30 and second == {"source_steps": 30}  # 300 steps x scale 0.1, seen by stage 2


def test_a_stage_waits_for_its_prerequisites_and_is_not_started_when_one_failed(tmp_path, capsys):
    data = _staged(tmp_path, "local", crash_at_step=5)
    launch(load_spec(None, [f"{k}={json.dumps(v)}" for k, v in data.items()]))
    out = capsys.readouterr().out
    assert "stage second not started: stage(s) ['first'] did not all finish" in out
    states = {s.key: s.state for s in sweep_status(tmp_path / "runs" / "staged")}
    assert [states[k] for k in sorted(states)] == ["pending", "pending", "failed", "failed"]  # consumer, toy


@pytest.mark.parametrize("change, message", [
    ({"stages": {"b": {"after": ["a"], "recipe": TOY}}}, "stages.b.after names ['a'], which is not an earlier stage"),
    ({"stages": {"a": {"recipe": TOY, "afterr": []}}}, "stages.a: unknown keys ['afterr']"),
    ({"scale": 0}, "scale=0 is not valid; valid: a number in (0, 1]"),
])
def test_bad_stages_are_refused(tmp_path, change, message):
    data = _spec(tmp_path, **change)
    if "stages" in change:
        data.pop("methods")
    with pytest.raises(SweepSpecError, match=re.escape(message)):
        load_spec(None, [f"{k}={json.dumps(v)}" for k, v in data.items()])


def _gpu_spec(tmp_path, td3_mt: dict | None = None, **kw) -> launch_mod.SweepSpec:
    """A SLURM sweep reserving one GPU per job: TD3-MT (``td3_mt``: its overrides) and the toy recipe (no device)."""
    td3 = {"total_steps": 30, "start_steps": 10, "eval_every": 30, **(td3_mt or {})}
    spec = {"name": "g", "root": str(tmp_path / "runs"), "suites": ["pendulum-mt3"], "seeds": [0],
            "methods": {"td3_mt": {"overrides": td3}, TOY: {}},
            "executor": "slurm", "slurm": {"gpus_per_task": 1}}
    spec.update(kw)
    return load_spec(None, [f"{k}={json.dumps(v)}" for k, v in spec.items()])


@pytest.mark.parametrize("change, device", [
    ({}, "cuda"),  # GPUs reserved: every job whose recipe has a device key runs on its GPU
    ({"slurm": {"gpus_per_task": 0}}, "cpu"),  # a CPU-only SLURM sweep keeps the recipe default
    ({"executor": "local"}, "cpu"),  # local and debug executors run here: the recipe default
    ({"executor": "debug"}, "cpu"),
    ({"td3_mt": {"device": "cpu"}}, "cpu"),  # the spec's own device wins
    ({"td3_mt": {"device": "cuda:1"}}, "cuda:1"),
])
def test_a_gpu_sweep_passes_the_device_to_its_jobs(tmp_path, change, device):
    elements = {e.recipe: e for e in launch_mod.expand(_gpu_spec(tmp_path, **change))}
    assert elements["td3_mt"].config["device"] == device
    assert "device" not in elements[TOY].config  # a recipe without a device key gets none


def test_a_gpu_sweep_is_submitted_from_a_machine_without_cuda_and_the_job_checks_on_its_node(tmp_path, monkeypatch,
                                                                                            capsys):
    if torch.cuda.is_available():
        pytest.skip("checks a submission from a machine without CUDA")
    submitted = []
    monkeypatch.setattr(launch_mod, "_submit_slurm", lambda spec, todo, folder, after: submitted.extend(todo) or [
        {"executor": "slurm", "job_id": f"7_{i}", "log": None} for i in range(len(todo))])
    spec = _gpu_spec(tmp_path, methods={"td3_mt": {"overrides": {"total_steps": 30, "start_steps": 10}}})  # no toy
    assert [e.key for e in launch(spec)] == ["td3_mt/pendulum-mt3/default/seed0"]
    assert "slurm executor, device cuda," in capsys.readouterr().out
    run_dir = Path(submitted[0].run_dir)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["device"] == "cuda"
    with pytest.raises(ValueError, match="^device='cuda' but no CUDA device is visible here"):
        launch_mod.SweepRunner()(submitted[0])  # the job on a node without a GPU: refused before any work
    assert read_job_file(run_dir)["state"] == "failed" and not (run_dir / "metrics.csv").exists()
    # everything but the presence of CUDA is still checked before submitting
    for bad, message in (({"start_steps": -1}, "start_steps=-1 is out of range"),
                         ({"device": "gpu"}, "device='gpu' is not valid")):
        bad_spec = _gpu_spec(tmp_path, td3_mt=bad)
        with pytest.raises(SweepSpecError, match=re.escape(message)):
            launch(bad_spec)
