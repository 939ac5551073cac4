"""tdmt.device: the device every recipe accepts, autocast on the device's type, the speed options' refusals, and
the two CPU-side checks of GPU code (host-sync counting, factories on the meta device)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdmt.algos import RECIPES, get_recipe
from tdmt.config import apply_overrides
from tdmt.device import HostSyncCounter, autocast, factories_on_meta, resolve_device, speed_wrap

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()


def test_resolve_device_accepts_cpu_and_refuses_unknown_names():
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "tpu", "CPU", ""):
        with pytest.raises(ValueError, match=rf"^device={bad!r} is not valid; valid: cpu, cuda, cuda:N"):
            resolve_device(bad)


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_is_refused_where_none_is_visible(name):
    with pytest.raises(ValueError, match=rf"^device={name!r} but no CUDA device is visible here .*; valid: cpu$"):
        resolve_device(name)


@pytest.mark.cuda
@pytest.mark.skipif(NO_CUDA, reason="needs CUDA")
def test_a_gpu_index_beyond_the_visible_ones_is_refused():
    count = torch.cuda.device_count()
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=f"only {count} CUDA device"):
        resolve_device(f"cuda:{count}")


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_takes_the_device_keys_and_refuses_bad_ones_in_one_line(recipe):
    cls = get_recipe(recipe).Config
    cfg = apply_overrides(cls(), {"device": "cpu", "precision": "bfloat16", "compile": True})
    assert (cfg.device, cfg.precision, cfg.compile, cfg.cudagraphs) == ("cpu", "bfloat16", True, False)
    assert cfg.config_hash() != cls().config_hash()  # precision names the run ...
    assert apply_overrides(cls(), {"compile": True}).config_hash() == cls().config_hash()  # ... compile does not
    with pytest.raises(ValueError, match="^device='gpu' is not valid"):
        apply_overrides(cls(), {"device": "gpu"})
    with pytest.raises(ValueError, match="precision"):
        apply_overrides(cls(), {"precision": "float16"})
    if NO_CUDA:
        with pytest.raises(ValueError, match="^device='cuda' but no CUDA device is visible"):
            apply_overrides(cls(), {"device": "cuda"})
        with pytest.raises(ValueError, match="^cudagraphs=true with device='cpu' is not valid; valid: device=cuda"):
            apply_overrides(cls(), {"cudagraphs": True})


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a machine without CUDA")
def test_a_recipe_asked_for_cuda_on_a_cpu_machine_prints_one_line_and_does_no_work(tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, str(ROOT / "recipes" / "ktm_drl.py"), "device=cuda",
                          f"run_dir={run_dir}"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "ktm_drl: device='cuda' but no CUDA device is visible here (torch " + torch.__version__
        + ", CUDA_VISIBLE_DEVICES unset or empty?); valid: cpu"]
    assert not run_dir.exists()


def test_autocast_follows_the_device_type():
    with autocast("cpu", "bfloat16"):
        assert torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    with autocast("cpu", "float32"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match=r"^precision='fp8' is not valid; valid: \['float32', 'bfloat16'\]"):
        autocast("cpu", "fp8")


def test_cudagraphs_are_refused_off_cuda():
    with pytest.raises(ValueError, match="cudagraphs=true needs device=cuda"):
        speed_wrap(lambda x: x, cudagraphs=True, device=torch.device("cpu"))


def test_speed_wrap_compiles_after_the_warmup_calls_and_matches_eager():
    calls = []

    def step(x: torch.Tensor) -> torch.Tensor:
        calls.append(torch.compiler.is_compiling())
        return torch.tanh(x) * 2 + 1

    fast = speed_wrap(step, compile=True, warmup=2)
    x = torch.linspace(-2, 2, 7)
    outs = [fast(x) for _ in range(3)]
    assert calls[:2] == [False, False] and calls[2] is True  # eager warm-up, then traced by dynamo
    for out in outs:
        torch.testing.assert_close(out, step(x))


def test_host_sync_counter_counts_scalar_reads_and_value_dependent_shapes():
    x = torch.randn(6)
    with HostSyncCounter() as syncs:
        y = x * 2 + 1  # device work only
        torch.argsort(y, stable=True)
        torch.zeros(3, dtype=torch.long).index_add_(0, torch.tensor([0, 2]), torch.tensor([1, 1]))
    assert syncs.total == 0
    with HostSyncCounter() as syncs:
        x.sum().item()
        bool(x[0] > 0)
        int(x.argmax())
        x.tolist()
        x[x > 0]
        x.nonzero()
        torch.repeat_interleave(torch.tensor([1, 2]))
        with syncs.paused():
            x.max().item()
    assert syncs.counts == {"aten::_local_scalar_dense": 3, "Tensor.tolist": 1, "aten::index": 1,
                            "aten::nonzero": 1, "aten::repeat_interleave": 1}
    assert "test_device.py" not in syncs.report()  # only tdmt frames are named; here none: "?"
    assert x.tolist() == x.tolist()  # the patched methods are restored


def test_factories_on_meta_expose_a_tensor_made_on_an_implicit_device():
    real = torch.ones(3)
    with factories_on_meta():
        explicit = torch.rand(3, device=real.device)
        implicit = torch.rand(3)
        with pytest.raises((RuntimeError, NotImplementedError)):
            (real + implicit).sum().item()
    assert explicit.device.type == "cpu" and implicit.device.type == "meta"
    assert torch.get_default_device().type == "cpu"


def test_counting_is_exact_under_a_default_device_and_factories_on_meta_leaves_no_mode_behind():
    """``torch.set_default_device`` installs a TorchFunctionMode that re-enters ``Tensor.tolist`` through the class
    attribute: a call is still one sync. ``factories_on_meta`` restores the mode stack as it found it."""
    from torch.overrides import _get_current_function_mode_stack

    before = len(_get_current_function_mode_stack())
    with factories_on_meta():
        assert len(_get_current_function_mode_stack()) == before + 1
    assert len(_get_current_function_mode_stack()) == before
    torch.set_default_device("cpu")
    try:
        with HostSyncCounter() as syncs:
            torch.arange(3).tolist()
        assert syncs.counts == {"Tensor.tolist": 1}
    finally:
        torch.set_default_device(None)
