"""Where a run's tensors live and how its updates run: the device, mixed precision, the speed options
(``compile=``, ``cudagraphs=``) and the two checks that keep GPU code honest on a CPU-only machine.

* :func:`resolve_device` — ``cpu``, ``cuda`` or ``cuda:N``, refused in one line when no such device is visible.
* :func:`autocast` — ``precision=bfloat16`` autocasts on the *training device's* type (``cuda`` or ``cpu``).
* :func:`speed_wrap` — ``torch.compile`` of an update function (TorchRL's ``compile_with_warmup``), then CUDA-graph
  capture (tensordict's ``CudaGraphModule``, as pytorch/rl's sota-implementations do). TorchRL warns that captured
  graphs can silently change results, so every learner that offers them has a test comparing N eager updates with
  N wrapped ones from the same state.
* :class:`HostSyncCounter` — a ``TorchDispatchMode`` that counts the operations that make a CUDA stream wait for
  the host (``.item()``, ``bool(t)``, ``int(t)`` dispatch ``aten._local_scalar_dense``; ``.tolist()``/``.numpy()``
  calls are counted as such; ``nonzero``, boolean-mask indexing, ``masked_select``, ``unique`` and
  ``repeat_interleave`` without ``output_size`` need the result's size). On a CPU run it counts what a GPU run
  would wait for (DESIGN §9).
* :func:`factories_on_meta` — ``torch.set_default_device("meta")`` around a step: a tensor created without
  ``device=`` becomes a meta tensor and fails on the first mix with real tensors (device hygiene, DESIGN §9).
"""

from __future__ import annotations

import contextlib
import re
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

PRECISIONS = ("float32", "bfloat16")
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")
DEVICE_HELP = "cpu, cuda, cuda:N (N < the number of visible GPUs)"


def resolve_device(name: str | torch.device) -> torch.device:
    """``name`` as a :class:`torch.device`, refused (``ValueError``, one line) when it is not ``cpu``/``cuda``/
    ``cuda:N`` or names a GPU this machine does not have — before any work is done."""
    text = str(name)
    if not DEVICE_PATTERN.match(text):
        raise ValueError(f"device={text!r} is not valid; valid: {DEVICE_HELP}")
    device = torch.device(text)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={text!r} but no CUDA device is visible here (torch {torch.__version__}, "
                             f"CUDA_VISIBLE_DEVICES unset or empty?); valid: cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device={text!r} but only {count} CUDA device(s) are visible; valid: cpu, "
                             + ", ".join(f"cuda:{i}" for i in range(count)))
    return device


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """``bfloat16``: autocast on ``device``'s type (CUDA: the normal fast path; CPU: fast on avx512_bf16, DESIGN §7);
    ``float32``: a no-op."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not valid; valid: {list(PRECISIONS)}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def speed_wrap(fn: Callable, *, compile: bool = False, cudagraphs: bool = False, device: torch.device | None = None,
               warmup: int = 2) -> Callable:
    """``fn`` (an update: tensors or TensorDicts in, tensors out; it may step optimisers) made faster:

    * ``compile``: ``torch.compile`` after ``warmup`` eager calls (TorchRL's ``compile_with_warmup``; the eager calls
      build the optimisers' state first, so the compiled graph sees it);
    * ``cudagraphs``: captured as a CUDA graph by tensordict's ``CudaGraphModule`` after ``warmup`` calls (CUDA only:
      refused on another device, since ``CudaGraphModule`` would silently run eager there).

    Both together compile first and capture the compiled function, as pytorch/rl's sota-implementations do.
    """
    if cudagraphs and (device is None or torch.device(device).type != "cuda"):
        raise ValueError(f"cudagraphs=true needs device=cuda (got device={device}); valid: cudagraphs=false")
    wrapped = fn
    if compile:
        from torchrl._utils import compile_with_warmup

        wrapped = compile_with_warmup(wrapped, warmup=warmup)
    if cudagraphs:
        from tensordict.nn import CudaGraphModule

        wrapped = CudaGraphModule(wrapped, warmup=warmup + (1 if compile else 0), device=device)
    return wrapped


# Ops that make the host wait for the device: scalar reads, and ops whose output size depends on tensor values.
_SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2", "aten::unique_dim",
             "aten::unique_consecutive", "aten::is_nonzero", "aten::equal", "aten::masked_scatter"}


class HostSyncCounter(TorchDispatchMode):
    """Counts host–device synchronisations while active (``with HostSyncCounter() as syncs: ...; syncs.total``).

    ``where`` keeps, per sync, the op and the innermost frame of tdmt code that caused it (what a failing test
    prints). :meth:`paused` stops counting, e.g. around a CPU-only env step that a GPU run would not sync on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.where: list[str] = []
        self._paused = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def _is_sync(self, func: Any, args: tuple, kwargs: dict) -> bool:
        name = func._schema.name
        if name in _SYNC_OPS:
            return True
        if name == "aten::index" and len(args) > 1:  # t[bool_mask]: the output size is the mask's count
            return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ())
        if name == "aten::repeat_interleave":  # repeats as a tensor without output_size
            return "output_size" not in kwargs and isinstance(args[0], torch.Tensor) and args[0].dtype != torch.bool \
                and (len(args) == 1 or isinstance(args[1], torch.Tensor))
        return False

    def __enter__(self) -> HostSyncCounter:
        # ``tolist``/``numpy`` copy to the host without dispatching a countable op on a CPU tensor: count the calls.
        self._originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, self._counting(name, original))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)

    def _counting(self, name: str, original: Callable) -> Callable:
        def call(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if self._paused:
                return original(tensor, *args, **kwargs)
            self._record(f"Tensor.{name}")
            with self.paused():  # an active TorchFunctionMode calls the method again through the class attribute
                return original(tensor, *args, **kwargs)

        return call

    def _record(self, op: str) -> None:
        self.counts[op] += 1
        frames = [f for f in traceback.extract_stack()[:-2] if "/tdmt/" in f.filename and
                  not f.filename.endswith("/tdmt/device.py")]
        self.where.append(f"{op} at " + (f"{frames[-1].filename.rsplit('/tdmt/', 1)[-1]}:{frames[-1].lineno} "
                                         f"({frames[-1].line})" if frames else "?"))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._paused and self._is_sync(func, args, kwargs):
            self._record(func._schema.name)
        return func(*args, **kwargs)

    def report(self) -> str:
        """One line per distinct cause, most frequent first."""
        return "\n".join(f"{n}× {w}" for w, n in Counter(self.where).most_common())


@contextlib.contextmanager
def factories_on_meta() -> Iterator[None]:
    """Make every tensor factory call without ``device=`` produce a meta tensor (``torch.randn(3)`` included), so that
    a step that creates a tensor on an implicit device fails on the first mix with real ones."""
    with torch.device("meta"):  # pushed and popped as a mode: the previous default (mode or none) comes back as it was
        yield
