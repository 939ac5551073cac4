"""On a REAL single-node SLURM cluster (slurm/testing/, with accounting): a job array of a tiny TD3-MT
configuration (plain and PCGrad/G-Surgery variants) over 2 seeds x 2 variants through the user's launcher
(`tdmt sweep`), one element preempted mid-run (requeued) that resumes from its checkpoint and completes with the
same environment steps, updates and evaluation points as an uninterrupted run, then `tdmt report`.

Skipped, saying why, only where SLURM cannot be installed (not root, or no apt/packages): CI runs
slurm/testing/install.sh first (.ci/run). The cluster is stopped by PID in a finalizer, even when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import submitit
import torch
import yaml

from tdmt import cli
from tdmt.launch import format_status, read_job_file, read_manifest, slurm_states, sweep_status
from tdmt.logger import CSVLog

pytestmark = pytest.mark.slurm
TESTING = Path(__file__).resolve().parents[1] / "slurm" / "testing"
DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "mariadbd", "munged", "sbatch", "sacct")
RECIPE = "td3_mt"
STEPS, START, EVAL, CKPT = 300, 50, 100, 20


def _why_no_slurm() -> str | None:
    missing = [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]
    if not missing:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"SLURM cannot be installed here (needs root and apt-get; missing {missing})"
    result = subprocess.run([str(TESTING / "install.sh")], capture_output=True, text=True)
    if result.returncode:
        return f"SLURM could not be installed: {result.stderr[-500:]}"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _why_no_slurm()
    if reason:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="tdmt-slurm-"))  # under /tmp: daemons run as users munge and mysql
    try:
        started = subprocess.run([str(TESTING / "start.sh"), str(folder)], capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, f"cluster did not start:\n{started.stdout}\n{started.stderr}"
        os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
        yield folder
    finally:
        os.environ.pop("SLURM_CONF", None)
        subprocess.run([str(TESTING / "stop.sh"), str(folder), "--purge"], capture_output=True, timeout=120)


def _wait_for(predicate, timeout_s: float, what: str, sweep: Path):
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} after {timeout_s} s\n{_diagnosis(sweep)}")


def _diagnosis(sweep: Path) -> str:
    """What a failing run needs to be understood: the sweep's status, squeue, and the tail of every job log."""
    lines = [format_status(sweep_status(sweep)),
             subprocess.run(["squeue"], capture_output=True, text=True).stdout]
    for log in sorted((sweep / "logs").glob("*_log.*")):
        lines += [f"--- {log.name}", *log.read_text().splitlines()[-15:]]
    return "\n".join(lines)


def test_job_array_with_preemption_requeue_resume_and_report(cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    tiny = {"total_steps": STEPS, "start_steps": START, "hidden": [32, 32], "batch_size_per_task": 32,
            "buffer_size_per_task": 1000,
            "eval_every": EVAL, "eval_episodes": 1, "checkpoint_every": CKPT, "progress": False}
    spec = {"name": "ci", "root": str(tmp_path / "runs"), "suites": ["pendulum-mt3"], "seeds": [0, 1],
            "overrides": tiny, "methods": {RECIPE: {"variants": {"plain": {}, "pcgrad": {"pcgrad": True,
                                                                                      "update_schedule": "batched"}}}},
            "executor": "slurm",
            "slurm": {"partition": "debug", "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 10,
                      "array_parallelism": 4}}
    spec_file = tmp_path / "ci.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    sweep = tmp_path / "runs" / "ci"
    assert cli.main(["sweep", str(spec_file), "slurm.partition=nosuch"]) == 3  # sbatch refuses the whole array
    assert "invalid partition" in capsys.readouterr().err.lower() and not (sweep / "sweep.json").exists()
    assert cli.main(["sweep", str(spec_file)]) == 0
    entries = read_manifest(sweep)["elements"]
    job_ids = [e["jobs"][-1]["job_id"] for e in entries]
    assert len(entries) == 4 and len({j.split("_")[0] for j in job_ids}) == 1  # ONE job array
    assert sorted(j.split("_")[1] for j in job_ids) == ["0", "1", "2", "3"]

    # Preempt one element once it is running and has a checkpoint (submitit's preemption: SIGTERM, then SIGUSR2).
    target = next(e for e in entries if e["variant"] == "pcgrad" and e["seed"] == 1)
    run_dir = Path(target["run_dir"])
    _wait_for(lambda: read_job_file(run_dir).get("state") == "running" and
              any((run_dir / "checkpoints").glob("step_*")), 150, f"{target['key']} not running with a checkpoint",
              sweep)
    job_id = target["jobs"][-1]["job_id"]
    submitit.SlurmJob(sweep / "logs", job_id)._interrupt()

    statuses = _wait_for(lambda: (st := sweep_status(sweep)) and all(s.state in ("done", "failed") for s in st)
                         and st, 200, "the sweep did not finish", sweep)
    assert [s.state for s in statuses] == ["done"] * 4, _diagnosis(sweep)
    log = Path(target["jobs"][-1]["log"]).read_text()
    resumed = re.findall(r"\[tdmt\] resumed .* from step (\d+)", log)
    assert "Requeued job" in log and len(resumed) == 1 and CKPT <= int(resumed[0]) < STEPS, log[-3000:]
    # Same environment steps (transitions stored per task), updates and evaluation points as an uninterrupted run.
    final = run_dir / "checkpoints" / f"step_{STEPS:010d}"
    state = torch.load(final / "state.pt", weights_only=False)["state"]["train"]
    assert state["updates"] == STEPS - START
    assert json.loads((final / "buffer_replay.json").read_text())["size"] == [STEPS] * 3
    assert [int(r["step"]) for r in CSVLog(run_dir / "eval.csv").rows()] == [100, 200, 300]
    history = subprocess.run(["sacct", "-n", "-P", "-X", "-D", "-o", "JobID,State", "-j", job_id],
                             capture_output=True, text=True, check=True).stdout
    assert "REQUEUED" in history or "PREEMPTED" in history, history
    _wait_for(lambda: slurm_states([job_id]).get(job_id) == "COMPLETED", 60, f"{job_id} not COMPLETED in sacct",
              sweep)

    capsys.readouterr()
    assert cli.main(["report", str(sweep)]) == 0
    md = (sweep / "report" / "report.md").read_text()
    assert "| task | G-Surgery | TD3-MT |" in md and "G-Surgery 2, TD3-MT 2" in md
    assert (sweep / "report" / "pendulum-mt3_curves.png").exists()
    # A second launch submits nothing: every element is done.
    assert cli.main(["sweep", str(spec_file)]) == 0
    assert "0 to submit" in capsys.readouterr().out
    assert len(read_manifest(sweep)["elements"][0]["jobs"]) == 1


def test_two_stage_spec_is_submitted_at_once_and_the_second_array_waits(cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    toy, consumer = "tests.toy_recipe", "tests.toy_consumer"
    spec = {"name": "staged", "root": str(tmp_path / "runs"), "suites": ["pendulum-mt3"], "seeds": [0, 1],
            "executor": "slurm", "scale": 0.5,
            "stages": {"first": {"methods": {toy: {"overrides": {"total_steps": 120, "eval_every": 60,
                                                                 "checkpoint_every": 60, "step_delay_s": 0.05}}}},
                       "second": {"after": ["first"], "methods": {consumer: {"overrides": {
                           "source": "{sweep}/" + toy + "/{suite}/default/seed{seed}"}}}}},
            "slurm": {"partition": "debug", "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 10,
                      "array_parallelism": 4}}
    spec_file = tmp_path / "staged.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    sweep = tmp_path / "runs" / "staged"
    assert cli.main(["sweep", str(spec_file)]) == 0
    out = capsys.readouterr().out
    entries = read_manifest(sweep)["elements"]
    arrays = {e["stage"]: e["jobs"][-1]["job_id"].split("_")[0] for e in entries}
    assert len(entries) == 4 and len(set(arrays.values())) == 2  # both stages submitted by one command
    assert f"stage second: submitted job array {arrays['second']}, held until {arrays['first']} end well" in out
    queue = subprocess.run(["squeue", "-h", "-r", "-j", arrays["second"], "-o", "%T %E"], capture_output=True,
                           text=True, check=True).stdout.split("\n")
    assert [line.split("(")[0] for line in queue if line] == [f"PENDING afterok:{arrays['first']}_*"] * 2, queue
    statuses = _wait_for(lambda: (st := sweep_status(sweep)) and all(s.state in ("done", "failed") for s in st)
                         and st, 240, "the staged sweep did not finish", sweep)
    assert [s.state for s in statuses] == ["done"] * 4, _diagnosis(sweep)
    for seed in (0, 1):
        first = json.loads((sweep / toy / "pendulum-mt3" / "default" / f"seed{seed}" / "summary.json").read_text())
        second = json.loads((sweep / consumer / "pendulum-mt3" / "default" / f"seed{seed}" /
                             "summary.json").read_text())
        assert first["steps"] == 60 and second == {"source_steps": 60}  # 120 x scale 0.5, read by stage 2
    times = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,Start,End", "-j", ",".join(arrays.values())],
                           capture_output=True, text=True, check=True).stdout.split()
    rows = [line.split("|") for line in times]
    first_end = max(end for jid, _, end in rows if jid.startswith(arrays["first"] + "_"))
    second_start = min(start for jid, start, _ in rows if jid.startswith(arrays["second"] + "_"))
    assert second_start >= first_end, rows  # ISO timestamps: the second array started after the first ended
