"""Per-task ("hierarchical", KTM-DRL §3.2) replay: one ring of ``capacity_per_task`` transitions per task.

Storage is a single TensorDict of batch size ``[K, C]`` (in memory or memory-mapped); ``extend`` routes every
transition to the ring of its ``task_id`` with one scatter, ``sample`` gathers ``[K, N]`` with one index.
Written by hand because TorchRL's ``ReplayBufferEnsemble`` samples its K buffers in a Python loop and stacks
them (see ``benchmarks/env_throughput.py`` for the comparison), and TorchRL writers keep one cursor per storage,
not one per task.

Memory and checkpoints scale with what was written, not with the capacity: the ring is allocated uninitialised
(the OS backs a page only once a transition lands in it), and :meth:`save_increment` persists only the transitions
added since the previous call, as a *segment* in a store folder shared by the checkpoints. A checkpoint lists the
segments it needs (those holding the last C transitions of some task); :meth:`load_increments` replays them into
the ring. Global transition counters per task (``totals``) say which rows of which segment are still live.

The ring, its cursors and counters live on ``device`` (where the updates run: a sampled batch never crosses the bus),
and neither :meth:`extend` nor :meth:`sample` waits for the device (no ``.item()``, no value-dependent shapes): the
counters stay tensors, task ids are range-checked with a device-side assertion, and the "is every task filled"
check of :meth:`sample` / :meth:`has_at_least` is read once and then remembered (fill levels only grow).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase

STORAGES = ("memory", "memmap")


class PerTaskReplayBuffer:
    """``sample()`` returns a TensorDict ``[K, N]`` whose row k holds N transitions of task k only.

    Args:
        num_tasks: K.
        capacity_per_task: C, the ring size of each task.
        batch_size_per_task: N, transitions drawn per task by :meth:`sample`.
        storage: ``"memory"`` or ``"memmap"`` (files under ``scratch_dir``, or a temporary folder; CPU only).
        task_key: the key that routes each transition to its task.
        device: where the ring and its counters live (the training device; default CPU).
    """

    def __init__(self, num_tasks: int, capacity_per_task: int, batch_size_per_task: int, *,
                 storage: str = "memory", scratch_dir: str | os.PathLike | None = None, task_key: str = "task_id",
                 device: str | torch.device = "cpu"):
        if storage not in STORAGES:
            raise ValueError(f"unknown storage {storage!r}; valid: {list(STORAGES)}")
        self.device = torch.device(device)
        if storage == "memmap" and self.device.type != "cpu":
            raise ValueError(f"storage='memmap' with device={str(self.device)!r} is not valid; valid: device='cpu' "
                             "(memory-mapped files live in host memory) or storage='memory'")
        for name, value in (("num_tasks", num_tasks), ("capacity_per_task", capacity_per_task),
                            ("batch_size_per_task", batch_size_per_task)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.num_tasks, self.capacity, self.batch_size = num_tasks, capacity_per_task, batch_size_per_task
        self.storage_kind, self.scratch_dir, self.task_key = storage, scratch_dir, task_key
        self._data: TensorDictBase | None = None
        self._cursor = self._counter()
        self._size = self._counter()
        self._total = self._counter()  # transitions ever written, per task
        self._saved = self._counter()  # ``_total`` at the last save_increment / load
        self._filled = 0  # a host-side lower bound of the least-filled task's size (read lazily, see has_at_least)
        self._segments: list[dict] = []  # the live segments of the store: name, starts, counts

    def _counter(self, values: list[int] | None = None) -> torch.Tensor:
        """A per-task ``long`` counter on the buffer's device (zeros, or ``values``)."""
        if values is None:
            return torch.zeros(self.num_tasks, dtype=torch.long, device=self.device)
        return torch.tensor(values, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------ writing
    def _allocate(self, example: TensorDictBase) -> None:
        """Storage for ``[K, C]`` transitions shaped like ``example``, left uninitialised: a page of memory (or of
        the memory-mapped file) is backed only once a transition is written into it."""
        shape = (self.num_tasks, self.capacity)
        if self.storage_kind == "memory":
            self._data = example.apply(lambda t: torch.empty(shape + t.shape, dtype=t.dtype, device=self.device),
                                       batch_size=shape, device=self.device)
        else:
            prefix = self.scratch_dir or tempfile.mkdtemp(prefix="tdmt-replay-")
            self._data = example.expand(*shape).memmap_like(prefix=prefix, existsok=True)

    def _routed(self, td: TensorDictBase) -> tuple[TensorDictBase, torch.Tensor]:
        """``td`` flattened onto the buffer's device and its task ids (range-checked where they live, without
        waiting for the device: on the CPU it raises at once); allocates the storage on the first call."""
        flat = td.reshape(-1)
        if self.task_key not in flat.keys():
            raise KeyError(f"transitions need a {self.task_key!r} entry to be routed to their task")
        flat = flat.to(self.device, non_blocking=True)
        tid = flat.get(self.task_key).reshape(-1).long()
        torch._assert_async(((tid >= 0) & (tid < self.num_tasks)).all(),
                            f"{self.task_key} out of range [0, {self.num_tasks})")
        if self._data is None:
            self._allocate(flat[0])
        return flat, tid

    def extend(self, td: TensorDictBase) -> None:
        """Add transitions with any leading batch shape; each goes to the ring of its ``task_id``."""
        if td.numel() == 0:
            return
        flat, tid = self._routed(td)
        # Per-task counts by scatter-add: torch.bincount reads the max on the host first.
        counts = self._counter().index_add_(0, tid, torch.ones_like(tid))
        order = torch.argsort(tid, stable=True)
        tid_sorted = tid[order]
        rank = torch.arange(tid.numel(), device=self.device) - (torch.cumsum(counts, 0) - counts)[tid_sorted]
        if tid.numel() > self.capacity:  # only then can a task bring more than C: its last C survive the ring
            keep = rank >= (counts[tid_sorted] - self.capacity)
            order, tid_sorted, rank = order[keep], tid_sorted[keep], rank[keep]
        pos = (self._cursor[tid_sorted] + rank) % self.capacity
        self._data[tid_sorted, pos] = flat[order]
        self._cursor = (self._cursor + counts) % self.capacity
        self._size = torch.clamp(self._size + counts, max=self.capacity)
        self._total += counts

    def extend_where(self, td: TensorDictBase, keep: torch.Tensor) -> None:
        """Add the rows of ``td`` (any leading shape) where ``keep`` is true, each to the ring of its task.

        Every row is written: a kept row at its task's cursor, the others onto the slots just past the kept ones,
        with the values those slots already hold (read first), so that no live transition changes; the cursors
        move by the kept counts only. Takes at most ``capacity_per_task`` rows of one task per call.
        """
        flat, tid = self._routed(td)
        keep = keep.reshape(-1).to(self.device, non_blocking=True)
        kept = self._counter().index_add_(0, tid, keep.long())
        rows = self._counter().index_add_(0, tid, torch.ones_like(tid))
        torch._assert_async((rows <= self.capacity).all(), f"extend_where takes at most capacity_per_task="
                            f"{self.capacity} rows of one task per call")
        order = torch.argsort(tid * 2 + (~keep).long(), stable=True)  # each task's kept rows first
        tid_sorted, keep_sorted = tid[order], keep[order]
        rank = torch.arange(tid.numel(), device=self.device) - (torch.cumsum(rows, 0) - rows)[tid_sorted]
        pos = (self._cursor[tid_sorted] + rank) % self.capacity
        old = self._data[tid_sorted, pos]
        new = flat[order].apply(lambda value, previous: torch.where(
            keep_sorted.view(-1, *([1] * (value.dim() - 1))), value, previous), old)
        self._data[tid_sorted, pos] = new
        self._cursor = (self._cursor + kept) % self.capacity
        self._size = torch.clamp(self._size + kept, max=self.capacity)
        self._total += kept

    # ------------------------------------------------------------------ reading
    def num_transitions(self, task: int | None = None) -> int:
        """Transitions stored for ``task`` (all tasks when ``None``)."""
        if task is None:
            return int(self._size.sum())
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task {task} out of range [0, {self.num_tasks})")
        return int(self._size[task])

    def min_transitions(self) -> int:
        """Transitions stored for the least-filled task (``sample`` needs it > 0; reads the device)."""
        return int(self._size.min())

    def has_at_least(self, n: int) -> bool:
        """Whether every task holds ``n`` transitions or more. Fill levels only grow, so once true this is
        answered on the host without reading the device again."""
        if self._filled < n:
            self._filled = self.min_transitions()
        return self._filled >= n

    def __len__(self) -> int:
        return self.num_transitions()

    def sample(self, batch_size_per_task: int | None = None, tasks: torch.Tensor | None = None) -> TensorDictBase:
        """``[K, N]`` TensorDict, row k drawn uniformly (with replacement) from task k's ring; with ``tasks`` (a
        ``[M]`` tensor of task indices, repeats allowed) ``[M, N]``, row i drawn from task ``tasks[i]``."""
        n = batch_size_per_task or self.batch_size
        if not self.has_at_least(1):
            empty = (self._size == 0).nonzero().flatten().tolist()
            raise RuntimeError(f"cannot sample: tasks {empty} have no transitions yet "
                               f"(stored per task: {self._size.tolist()})")
        rows = torch.arange(self.num_tasks, device=self.device) if tasks is None else tasks.to(self.device)
        idx = (torch.rand(rows.shape[0], n, device=self.device) * self._size[rows, None]).long()
        return self._data[rows[:, None].expand(rows.shape[0], n), idx]

    def task_data(self, task: int) -> TensorDictBase:
        """Every stored transition of ``task`` (in storage order)."""
        return self._data[task, : self.num_transitions(task)]

    # ------------------------------------------------------------------ persistence
    def _layout(self) -> dict[str, list]:
        """Every stored key with its per-transition shape and dtype (what a saved buffer must match)."""
        if self._data is None:
            return {}
        return {".".join((k,) if isinstance(k, str) else k): [list(v.shape[2:]), str(v.dtype)]
                for k, v in self._data.items(include_nested=True, leaves_only=True)}

    def _meta(self) -> dict:
        return {"num_tasks": self.num_tasks, "capacity_per_task": self.capacity, "cursor": self._cursor.tolist(),
                "size": self._size.tolist(), "total": self._total.tolist(), "layout": self._layout()}

    def dumps(self, path: str | os.PathLike) -> None:
        """Write the buffer to the folder ``path`` (atomically: a temporary folder renamed at the end)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self._data is not None:
            self._data.cpu().memmap(tmp / "storage", copy_existing=True)
        (tmp / "meta.json").write_text(json.dumps(self._meta()))
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)

    def loads(self, path: str | os.PathLike) -> None:
        """Restore what :meth:`dumps` wrote; the buffer must have the same K and capacity, and (once it holds data)
        the same keys, shapes and dtypes — all checked before any state changes."""
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{path} holds no saved replay buffer (missing meta.json)")
        meta = json.loads(meta_file.read_text())
        if (meta["num_tasks"], meta["capacity_per_task"]) != (self.num_tasks, self.capacity):
            raise ValueError(f"buffer saved with num_tasks={meta['num_tasks']}, capacity_per_task="
                             f"{meta['capacity_per_task']}; this buffer has num_tasks={self.num_tasks}, "
                             f"capacity_per_task={self.capacity}")
        ours, theirs = self._layout(), meta.get("layout", {})
        if ours and theirs and ours != theirs:  # checked before any state is touched
            diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            raise ValueError(f"buffer saved in {path} holds other keys or shapes than this one ({diff}: saved "
                             f"{[theirs.get(k) for k in diff]}, here {[ours.get(k) for k in diff]})")
        if (path / "storage").exists():
            saved = TensorDict.load_memmap(path / "storage")
            if self.storage_kind == "memory":
                self._data = saved.to(self.device) if self.device.type != "cpu" else saved.clone()
            else:
                self._allocate(saved[0, 0])
                self._data.update_(saved)
        else:
            self._data = None
        self._cursor = self._counter(meta["cursor"])
        self._size = self._counter(meta["size"])
        self._total = self._counter(meta.get("total", meta["size"]))
        self._saved, self._segments, self._filled = self._total.clone(), [], 0

    # ------------------------------------------------------------------ incremental persistence (checkpoints)
    def _live(self, segment: dict, total: torch.Tensor) -> bool:
        """Whether ``segment`` still holds one of the last C transitions of some task."""
        starts, counts = self._counter(segment["starts"]), self._counter(segment["counts"])
        return bool(((counts > 0) & (starts + counts > total - self.capacity)).any())

    def save_increment(self, store: str | os.PathLike) -> dict:
        """Write the transitions added since the last call as one segment under ``store`` (atomically) and return
        what restores the buffer as it is now: counters, layout and the names of the live segments. Costs time
        and disk in proportion to the transitions added, not to the capacity."""
        store = Path(store)
        start = torch.maximum(self._saved, self._total - self.capacity)
        counts = self._total - start
        if self._data is not None and int(counts.sum()) > 0:
            tasks = torch.repeat_interleave(torch.arange(self.num_tasks, device=self.device), counts)
            offset = torch.arange(tasks.numel(), device=self.device) - (torch.cumsum(counts, 0) - counts)[tasks]
            rows = self._data[tasks, (start[tasks] + offset) % self.capacity].cpu()
            name = f"segment-{int(self._total.sum()):012d}-{uuid.uuid4().hex[:8]}"
            tmp = store / f".tmp-{name}"
            tmp.mkdir(parents=True)
            rows.memmap(tmp / "rows")
            info = {"starts": start.tolist(), "counts": counts.tolist()}
            (tmp / "segment.json").write_text(json.dumps(info))
            from tdmt.checkpoint import MANIFEST, _manifest  # late: tdmt.checkpoint imports this module

            (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp)))
            os.replace(tmp, store / name)
            self._segments.append({"name": name, **info})
        self._saved = self._total.clone()
        self._segments = [seg for seg in self._segments if self._live(seg, self._total)]
        return {**self._meta(), "segments": [seg["name"] for seg in self._segments]}

    def load_increments(self, store: str | os.PathLike, meta: dict) -> None:
        """Restore what :meth:`save_increment` returned (the segments are read from ``store`` and verified);
        nothing changes unless every check passes."""
        store = Path(store)
        if (meta["num_tasks"], meta["capacity_per_task"]) != (self.num_tasks, self.capacity):
            raise ValueError(f"buffer saved with num_tasks={meta['num_tasks']}, capacity_per_task="
                             f"{meta['capacity_per_task']}; this buffer has num_tasks={self.num_tasks}, "
                             f"capacity_per_task={self.capacity}")
        ours = self._layout()
        if ours and meta["layout"] and ours != meta["layout"]:
            raise ValueError(f"buffer saved in {store} holds other keys or shapes than this one: saved "
                             f"{meta['layout']}, here {ours}")
        segments = []
        for name in meta["segments"]:
            from tdmt.checkpoint import verify  # the checkpoints' own size/CRC32 check

            verify(store / name)
            info = json.loads((store / name / "segment.json").read_text())
            segments.append(({"name": name, **info}, TensorDict.load_memmap(store / name / "rows")))
        total = self._counter(meta["total"])
        self._data = None
        for info, rows in segments:
            if self._data is None:
                self._allocate(rows[0])
            counts, starts = self._counter(info["counts"]), self._counter(info["starts"])
            tasks = torch.repeat_interleave(torch.arange(self.num_tasks, device=self.device), counts)
            index = starts[tasks] + torch.arange(tasks.numel(), device=self.device) \
                - (torch.cumsum(counts, 0) - counts)[tasks]
            keep = index >= (total - self.capacity)[tasks]  # rows overwritten later in the ring are skipped
            self._data[tasks[keep], index[keep] % self.capacity] = rows.to(self.device)[keep]
        self._total, self._saved = total, total.clone()
        self._cursor = total % self.capacity
        self._size = torch.clamp(total, max=self.capacity)
        self._segments = [info for info, _ in segments]
        self._filled = 0

