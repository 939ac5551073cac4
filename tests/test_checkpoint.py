"""Checkpoint/resume: kill at a random step, corrupt checkpoints, signals at step boundaries, log restore."""

from __future__ import annotations

import json
import os
import random
import signal

import pytest
import torch
from tensordict import TensorDict

from tdmt.algos.run import StopRequested, TrainingRun, signal_actions
from tdmt.checkpoint import CheckpointError, CheckpointManager
from tdmt.data import PerTaskReplayBuffer
from tdmt.logger import CSVLog
from tests import toy_recipe

TOTAL, EVERY, EVAL = 120, 20, 40


def _toy(run_dir, **kw) -> toy_recipe.Config:
    values = dict(run_dir=str(run_dir), total_steps=TOTAL, checkpoint_every=EVERY, eval_every=EVAL, seed=3)
    return toy_recipe.Config(**{**values, **kw})


def _steps(path) -> list[int]:
    return [int(r["step"]) for r in CSVLog(path).rows()]


def _restored_buffer(run_dir) -> tuple[int, PerTaskReplayBuffer]:
    rb = PerTaskReplayBuffer(3, 10_000, 16)
    step, _ = CheckpointManager(run_dir).load_latest({"replay": rb})
    return step, rb


def test_kill_at_random_step_then_resume_matches_uninterrupted(tmp_path):
    kill = random.Random().randint(EVERY + 1, TOTAL - 1)
    print(f"killing at step {kill}")
    reference = toy_recipe.run(_toy(tmp_path / "ref"))
    with pytest.raises(toy_recipe.SimulatedCrash):
        toy_recipe.run(_toy(tmp_path / "run", crash_at_step=kill))
    last_ckpt = (kill - 1) // EVERY * EVERY  # the crash comes before the checkpoint of its own step

    # The buffer restored from the killed run is the one it had at the checkpoint: identical to a run of the
    # same seed stopped there (training is deterministic given the seed).
    toy_recipe.run(_toy(tmp_path / "prefix", total_steps=last_ckpt))
    step, restored = _restored_buffer(tmp_path / "run")
    step_ref, at_ckpt = _restored_buffer(tmp_path / "prefix")
    assert step == step_ref == last_ckpt
    assert [restored.num_transitions(k) for k in range(3)] == [last_ckpt] * 3
    for k in range(3):
        assert torch.equal(restored.task_data(k)["observation"], at_ckpt.task_data(k)["observation"])
        assert torch.equal(restored.task_data(k)["action"], at_ckpt.task_data(k)["action"])

    resumed = toy_recipe.run(_toy(tmp_path / "run"))
    assert resumed["resumed_from"] == last_ckpt
    assert (resumed["steps"], resumed["env_steps"], resumed["updates"]) == \
        (reference["steps"], reference["env_steps"], reference["updates"]) == (TOTAL, 3 * TOTAL, TOTAL - 9)
    assert _steps(tmp_path / "run" / "eval.csv") == _steps(tmp_path / "ref" / "eval.csv") == [40, 80, 120]
    assert _steps(tmp_path / "run" / "metrics.csv") == list(range(10, TOTAL + 1))


def _two_checkpoints(tmp_path) -> CheckpointManager:
    toy_recipe.run(_toy(tmp_path, total_steps=40))
    manager = CheckpointManager(tmp_path)
    assert [p.name for p in manager.checkpoints()] == ["step_0000000020", "step_0000000040"]
    return manager


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, capsys):
    manager = _two_checkpoints(tmp_path)
    state = manager.checkpoints()[-1] / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    state.write_bytes(bytes(data))
    step, rb = _restored_buffer(tmp_path)
    assert step == 20 and rb.num_transitions() == 3 * 20
    out = capsys.readouterr().out
    assert "step_0000000040" in out and "CRC32 mismatch" in out and "trying the previous one" in out
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if "step_" in p.name) == \
        ["corrupt-step_0000000040", "step_0000000020"]  # quarantined: never tried again
    # A resumed run continues from step 20 and still ends with the same counts.
    summary = toy_recipe.run(_toy(tmp_path, total_steps=40))
    assert (summary["resumed_from"], summary["steps"], summary["updates"]) == (20, 40, 31)


def test_truncated_buffer_falls_back_and_all_corrupt_raises(tmp_path, capsys):
    manager = _two_checkpoints(tmp_path)
    newest, oldest = manager.checkpoints()[::-1]
    segments = [set(json.loads((c / "buffer_replay.json").read_text())["segments"]) for c in (newest, oldest)]
    (added,) = segments[0] - segments[1]  # the transitions of steps 21-40: only the newest checkpoint has them
    store = tmp_path / "checkpoints" / "replay_replay" / added
    files = sorted(p for p in store.rglob("*") if p.is_file() and p.stat().st_size > 100)
    with files[0].open("r+b") as f:
        f.truncate(files[0].stat().st_size // 2)
    assert _restored_buffer(tmp_path)[0] == 20
    assert "truncated" in capsys.readouterr().out
    (oldest / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        _restored_buffer(tmp_path)
    assert (tmp_path / "checkpoints" / oldest.name).exists()  # kept: a run never silently restarts from scratch


def test_interrupted_save_is_ignored_and_cleaned(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(5, {"x": torch.ones(2)})
    stale = manager.folder / ".tmp-step_0000000010-999"
    stale.mkdir()
    (stale / "state.pt").write_bytes(b"half")
    assert manager.load_latest()[0] == 5
    manager.save(15, {"x": torch.zeros(2)})
    assert not stale.exists()
    step, state = manager.load_latest()
    assert step == 15 and torch.equal(state["x"], torch.zeros(2))


def _loop(run: TrainingRun, total: int, send: dict[int, int]) -> int:
    counter = {"n": 0}
    with run.guard(lambda: {"n": counter["n"]}) as guard:
        for step in range(1, total + 1):
            counter["n"] = step
            if step in send:
                os.kill(os.getpid(), send[step])
            guard.check(step)
    return counter["n"]


def test_sigusr2_saves_and_stops_at_the_step_boundary(tmp_path):
    run = TrainingRun(tmp_path)
    with pytest.raises(StopRequested) as info:
        _loop(run, 10, {7: signal.SIGUSR2})
    assert info.value.signum == signal.SIGUSR2
    step, state = run.checkpoints.load_latest()
    assert step == 7 and state["train"] == {"n": 7}


def test_sigterm_save_action_checkpoints_and_continues(tmp_path):
    run = TrainingRun(tmp_path)
    with signal_actions({signal.SIGTERM: "save"}):
        assert _loop(run, 10, {3: signal.SIGTERM}) == 10
    assert [p.name for p in run.checkpoints.checkpoints()] == ["step_0000000003"]
    with pytest.raises(StopRequested):  # the default action is restored after the block
        _loop(TrainingRun(tmp_path / "b"), 10, {3: signal.SIGTERM})
    with pytest.raises(ValueError, match="bad signal actions"):
        with signal_actions({signal.SIGTERM: "explode"}):
            pass


def test_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    run = TrainingRun(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with run.guard(lambda: {}):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
    assert run.checkpoints.checkpoints() == []


def test_log_restore_drops_torn_rows_and_uses_snapshot_when_live_lost_rows(tmp_path):
    log = CSVLog(tmp_path / "eval.csv")
    for step in (10, 20, 30):
        log.log(step, r=step * 1.5, s=1)
    snapshot = tmp_path / "snapshot.csv"
    snapshot.write_text(log.path.read_text())
    with log.path.open("a") as f:
        f.write("40,60")  # a torn last line (crash mid-write): field 's' missing
    log.restore(snapshot, 40)
    assert _steps(log.path) == [10, 20, 30]
    log.path.write_text("step,r,s\n10,15.0,1\n")  # the live file lost rows
    CSVLog(log.path).restore(snapshot, 20)
    assert _steps(log.path) == [10, 20]
    log.path.unlink()
    CSVLog(log.path).restore(snapshot, 30)
    assert [float(r["r"]) for r in CSVLog(log.path).rows()] == [15.0, 30.0, 45.0]


def _transitions(k: int, n: int, start: int) -> TensorDict:
    """``n`` transitions of task ``k`` whose observation is their global index (start, start + 1, ...)."""
    index = torch.arange(start, start + n, dtype=torch.float32)
    return TensorDict({"observation": index[:, None].expand(n, 5).clone(),
                       "task_id": torch.full((n,), k, dtype=torch.long)}, batch_size=[n])


def test_checkpoints_cost_what_was_added_and_restore_the_ring_exactly_after_wraps(tmp_path):
    capacity, manager = 50, CheckpointManager(tmp_path, keep=2)
    rb = PerTaskReplayBuffer(2, capacity, 4)
    written = [0, 0]
    sizes = []
    for step, adds in enumerate([(30, 10), (5, 5), (40, 0), (70, 3), (1, 1)], start=1):
        for k, n in enumerate(adds):
            if n:
                rb.extend(_transitions(k, n, written[k]))
                written[k] += n
        manager.save(step, {}, {"replay": rb})
        meta = json.loads((manager.checkpoints()[-1] / "buffer_replay.json").read_text())
        newest = max((tmp_path / "checkpoints" / "replay_replay").iterdir(), key=lambda p: p.name)
        sizes.append(sum(f.stat().st_size for f in (newest / "rows").glob("*.memmap")))
        restored = PerTaskReplayBuffer(2, capacity, 4)
        assert manager.load_latest({"replay": restored})[0] == step
        for k in range(2):  # the same live transitions, in the same ring slots, with the same cursor
            assert restored.num_transitions(k) == rb.num_transitions(k) == min(written[k], capacity)
            assert torch.equal(restored.task_data(k)["observation"], rb.task_data(k)["observation"])
        assert torch.equal(restored._cursor, rb._cursor)
        live = {p.name for p in (tmp_path / "checkpoints" / "replay_replay").iterdir()}
        kept = set().union(*(json.loads((c / "buffer_replay.json").read_text())["segments"]
                             for c in manager.checkpoints()))
        assert live == kept and set(meta["segments"]) <= live  # dead segments are deleted
    # Each segment holds only what its interval added (5 float observations + a task id per transition):
    # 40, 10, 40, min(70, 50) + 3 and 2 transitions.
    per_row = sizes[0] / 40
    assert [round(s / per_row) for s in sizes] == [40, 10, 40, 53, 2]
