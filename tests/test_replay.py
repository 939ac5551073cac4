import pytest
import torch
from tensordict import TensorDict

from tdmt.data import PerTaskReplayBuffer


def _transitions(task_ids, start=0):
    n = len(task_ids)
    values = torch.arange(start, start + n, dtype=torch.float32)
    return TensorDict({"task_id": torch.as_tensor(task_ids), "observation": values[:, None].expand(n, 3).clone(),
                       "next": {"reward": values[:, None]}}, [n])


def test_rows_hold_only_their_task():
    rb = PerTaskReplayBuffer(4, 100, 32)
    gen = torch.Generator().manual_seed(0)
    rb.extend(_transitions(torch.randint(0, 4, (500,), generator=gen)))
    sample = rb.sample()
    assert sample.batch_size == (4, 32)
    for k in range(4):
        assert torch.all(sample["task_id"][k] == k)


def test_extend_routes_any_leading_shape():
    rb = PerTaskReplayBuffer(3, 10, 2)
    td = _transitions([0, 1, 2] * 4).reshape(4, 3)  # [T, K] as a collector of a [K] env gives
    rb.extend(td)
    assert [rb.num_transitions(k) for k in range(3)] == [4, 4, 4] and rb.num_transitions() == 12
    assert rb.min_transitions() == 4
    rb.extend(_transitions([0, 2]))
    assert rb.min_transitions() == 4 and rb.num_transitions(0) == 5
    assert rb.task_data(1)["observation"][:, 0].tolist() == [1, 4, 7, 10]


def test_ring_keeps_the_last_capacity_per_task():
    rb = PerTaskReplayBuffer(2, 3, 1)
    rb.extend(_transitions([0, 0, 1, 0, 0, 0]))  # task 0 gets values 0,1,3,4,5
    assert rb.num_transitions(0) == 3 and rb.num_transitions(1) == 1
    assert sorted(rb.task_data(0)["observation"][:, 0].tolist()) == [3, 4, 5]
    rb.extend(_transitions([0], start=9))
    assert sorted(rb.task_data(0)["observation"][:, 0].tolist()) == [4, 5, 9]


@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_dumps_loads_round_trip(tmp_path, storage):
    scratch = tmp_path / "scratch" if storage == "memmap" else None
    rb = PerTaskReplayBuffer(3, 8, 4, storage=storage, scratch_dir=scratch)
    rb.extend(_transitions([0, 1, 1, 2, 0, 2, 2, 2, 1, 0, 0]))
    rb.dumps(tmp_path / "rb")
    rb2 = PerTaskReplayBuffer(3, 8, 4, storage=storage)
    rb2.loads(tmp_path / "rb")
    for k in range(3):
        assert rb2.num_transitions(k) == rb.num_transitions(k)
        assert (rb2.task_data(k) == rb.task_data(k)).all()
    # the ring cursor survives too: the next write lands in the same place
    rb.extend(_transitions([2] * 7, start=100))
    rb2.extend(_transitions([2] * 7, start=100))
    assert (rb2.task_data(2) == rb.task_data(2)).all()
    rb.dumps(tmp_path / "rb")  # overwriting an existing dump is atomic and works
    rb2.loads(tmp_path / "rb")
    assert (rb2.task_data(2) == rb.task_data(2)).all()


def test_bad_inputs_raise_clear_errors(tmp_path):
    rb = PerTaskReplayBuffer(3, 8, 4)
    with pytest.raises(RuntimeError, match=r"task_id out of range \[0, 3\)"):
        rb.extend(_transitions([0, 3]))
    assert rb.num_transitions() == 0  # nothing half-written
    rb.extend(_transitions([0, 2]))
    with pytest.raises(RuntimeError, match=r"tasks \[1\] have no transitions"):
        rb.sample()
    rb.dumps(tmp_path / "rb")
    with pytest.raises(ValueError, match=r"num_tasks=3, capacity_per_task=8; this buffer has num_tasks=3, "
                                         r"capacity_per_task=16"):
        PerTaskReplayBuffer(3, 16, 4).loads(tmp_path / "rb")
    with pytest.raises(ValueError, match=r"unknown storage 'disk'; valid: \['memory', 'memmap'\]"):
        PerTaskReplayBuffer(3, 8, 4, storage="disk")
    with pytest.raises(KeyError, match="task_id"):
        rb.extend(TensorDict({"x": torch.zeros(2)}, [2]))
    with pytest.raises(FileNotFoundError, match="no saved replay buffer"):
        rb.loads(tmp_path / "missing")


def test_extend_and_sample_never_wait_for_the_device():
    """Once every task holds data, extend + sample make zero host syncs (DESIGN §9: what a CUDA run would wait
    for, counted on the CPU) and create no tensor on an implicit device."""
    from tdmt.device import HostSyncCounter, factories_on_meta

    rb = PerTaskReplayBuffer(3, 8, 4)
    rb.extend(_transitions([0, 1, 2, 0, 1, 2]))
    rb.sample()  # the one-off "is every task filled" read
    batch = _transitions([2, 0, 1, 1, 2, 2, 2, 0])  # wraps the rings (C = 8; a call of more than C rows may sync)
    with HostSyncCounter() as syncs:
        for _ in range(3):
            rb.extend(batch)
            out = rb.sample()
            sub = rb.sample(tasks=torch.tensor([2, 2, 0]))
    assert syncs.total == 0, syncs.report()
    assert out.shape == (3, 4) and (out["task_id"] == torch.arange(3)[:, None]).all()
    assert sub.shape == (3, 4) and (sub["task_id"] == torch.tensor([2, 2, 0])[:, None]).all()
    with factories_on_meta():
        rb.extend(batch)
        out = rb.sample()
    assert out["task_id"].device.type == "cpu"
