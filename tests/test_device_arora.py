"""Arora et al. recipes on a device (issue #12): no host sync per A2C / KL update or env step between logging
intervals, every tensor of a step made on its device, ``compile`` (and CUDA graphs, where CUDA is present) equal to
eager, ``precision=bfloat16`` autocasting the updates, and GPU files that load on a CPU.

The env stays on the CPU (MuJoCo): its own ``_step``/``_reset`` (the action's one trip to the host, the physics)
are left out of the counts with :meth:`HostSyncCounter.paused`; everything else is counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from tensordict import TensorDictBase
from torchrl.envs import TransformedEnv

from tdmt.algos import a2c_multitask, distill_kl
from tdmt.algos.a2c_multitask import A2CAgent, Rollouts, make_agent
from tdmt.algos.distill_kl import KLStudentLearner, MixedBehaviour, make_student, make_teacher_actor
from tdmt.device import HostSyncCounter, factories_on_meta
from tdmt.envs import TaskObservationNorm, make_env
from tdmt.envs.normalize import normalized

SUITE, E, T = "pendulum-mt3", 2, 5
K = 3
NO_CUDA = not torch.cuda.is_available()


@contextlib.contextmanager
def env_paused(env, counter: HostSyncCounter) -> Iterator[None]:
    """``env``'s own ``_step``/``_reset`` (the CPU physics and the action's transfer) run with ``counter`` paused."""
    base = getattr(env, "base_env", env)
    originals = {name: getattr(base, name) for name in ("_step", "_reset")}

    def paused(fn):
        def call(*args, **kwargs):
            with counter.paused():
                return fn(*args, **kwargs)
        return call

    for name, fn in originals.items():
        setattr(base, name, paused(fn))
    try:
        yield
    finally:
        for name in originals:
            delattr(base, name)


def _a2c(device: str = "cpu", **kw) -> tuple[A2CAgent, object, Rollouts]:
    torch.manual_seed(0)
    cfg = a2c_multitask.Config(suite=SUITE, num_envs_per_task=E, t_max=T, device=device, **kw)
    env = make_env(SUITE, seed=0, num_envs_per_task=E, task_onehot=False, device=device)
    agent = make_agent(cfg, env)
    env = agent.wrap(env)
    return agent, env, Rollouts(env)


def _kl(device: str = "cpu", **kw) -> tuple[KLStudentLearner, MixedBehaviour, object, Rollouts]:
    torch.manual_seed(0)
    cfg = distill_kl.Config(suite=SUITE, num_envs_per_task=E, t_max=T, device=device, **kw)
    env = make_env(SUITE, seed=0, num_envs_per_task=E, task_onehot=False, device=device)
    teacher = make_teacher_actor(cfg, env).requires_grad_(False)
    student = make_student(cfg, env)
    learner = KLStudentLearner(cfg, student, teacher, env.suite.act_dims, env.suite.act_max)
    behaviour = MixedBehaviour(student, teacher, K, device)
    behaviour.use_student = torch.tensor([True, False, True], device=device)
    return learner, behaviour, env, Rollouts(env)


def _a2c_updates(agent: A2CAgent, batch: TensorDictBase) -> list[torch.Tensor]:
    """The cycled per-head updates (paper), then a joint one."""
    stats = [agent.update(batch[k], task=k)["grad_norm"] for k in range(K)]
    return stats + [agent.update(batch)["grad_norm"]]


def _kl_updates(learner: KLStudentLearner, batch: TensorDictBase) -> list[torch.Tensor]:
    return [learner.update(batch[k], k) for k in range(K)] + [learner.update(batch)]


# ------------------------------------------------------------------------------------------------ host syncs
def test_a2c_collector_and_learner_make_no_host_sync_after_warm_up():
    agent, env, rollouts = _a2c()
    syncs = HostSyncCounter()
    with env_paused(env, syncs):
        _a2c_updates(agent, rollouts.collect(agent.actor, T))  # warm-up: optimiser state, caches
        with syncs:
            batches = [rollouts.collect(agent.actor, T) for _ in range(3)]
        assert syncs.total == 0, "collector:\n" + syncs.report()
        with syncs:
            stats = [s for batch in batches for s in _a2c_updates(agent, batch)]
        assert syncs.total == 0, "learner:\n" + syncs.report()
    assert all(float(s) > 0 for s in stats)  # real updates ran (read after counting)
    assert float(rollouts.returns.count.sum()) == 0  # Pendulum's 200-step episodes: none ended, none counted


def test_kl_collector_and_learner_make_no_host_sync_after_warm_up():
    learner, behaviour, env, rollouts = _kl()
    syncs = HostSyncCounter()
    with env_paused(env, syncs):
        _kl_updates(learner, rollouts.collect(behaviour, T))
        with syncs:
            batches = [rollouts.collect(behaviour, T) for _ in range(3)]
        assert syncs.total == 0, "collector:\n" + syncs.report()
        with syncs:
            kls = [kl for batch in batches for kl in _kl_updates(learner, batch)]
        assert syncs.total == 0, "learner:\n" + syncs.report()
    assert all(float(kl) > 0 for kl in kls)
    # the teacher acted on task 1: its actions are the teacher's (the stored teacher mean + noise), not the student's
    assert not torch.equal(batches[0]["action"][1], batches[0]["loc"][1])


def test_episode_returns_are_summed_per_task_on_the_device_and_read_once():
    _, env, rollouts = _a2c()
    rollouts.returns.running.fill_(1.0)
    td = rollouts.td.clone()
    td.set(("next", "reward"), torch.full((K, E, 1), 2.0))
    td.set(("next", "done"), torch.tensor([[True, False], [False, False], [True, True]]).unsqueeze(-1))
    rollouts.returns.add(td.get(("next", "reward")), td.get(("next", "done")))
    assert rollouts.pop_returns(["a", "b", "c"]) == {"train/a/return": 3.0, "train/c/return": 3.0}
    torch.testing.assert_close(rollouts.returns.running, torch.tensor([[0.0, 3.0], [3.0, 3.0], [0.0, 0.0]]))
    assert rollouts.pop_returns(["a", "b", "c"]) == {}  # read and cleared


def test_the_normalised_env_resets_done_rows_as_torchrl_does_without_a_host_sync():
    """Through an episode end (Pendulum: 200 steps): the same states, resets and normalised observations as TorchRL's
    ``TransformedEnv``, and no host sync outside the base env's own ``_step``/``_reset``."""
    envs = []
    for wrap in (TransformedEnv, normalized):
        env = make_env(SUITE, seed=0, num_envs_per_task=E, task_onehot=False)
        envs.append(wrap(env, TaskObservationNorm(K, env.suite.obs_max)))
    tds = [env.reset() for env in envs]
    actions = torch.rand(205, K, E, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1
    syncs, ends = HostSyncCounter(), 0
    with env_paused(envs[1], syncs):
        for action in actions:
            step, tds[0] = envs[0].step_and_maybe_reset(tds[0].set("action", action))
            with syncs:
                _, tds[1] = envs[1].step_and_maybe_reset(tds[1].set("action", action.clone()))
            ends += int(step["next", "done"].sum())
            for key in ("observation", "done", "task_id"):
                torch.testing.assert_close(tds[1][key], tds[0][key], msg=lambda m, k=key: f"{k}: {m}")
    assert syncs.total == 0, syncs.report()
    assert ends == K * E  # every row's episode ended once (and was reset) during the run


# ------------------------------------------------------------------------------------------------ device hygiene
def test_a_rollout_step_and_every_update_create_tensors_only_on_their_device():
    agent, env, rollouts = _a2c()
    learner, behaviour, kl_env, kl_rollouts = _kl()
    with factories_on_meta():
        batch = rollouts.collect(agent.actor, 1)
        stats = _a2c_updates(agent, batch)
        kl_batch = kl_rollouts.collect(behaviour, 1)
        kls = _kl_updates(learner, kl_batch)
    for t in [*stats, *kls, batch["action"], kl_batch[("teacher", "loc")], rollouts.returns.running]:
        assert t.device.type == "cpu"
    assert all(bool(torch.isfinite(t)) for t in [*stats, *kls])


# ------------------------------------------------------------------------------------------------ speed options
def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _same_updates(make, step, device: str, **speed) -> None:
    """N updates eager and N with ``speed`` from the same seed, state and data: every parameter agrees."""
    runs = []
    for options in ({}, speed):
        learner, collect = make(device, **options)
        batches = [collect() for _ in range(2)]
        torch.manual_seed(1)
        for batch in batches * 2:
            step(learner, batch)
        runs.append(learner)
    eager, fast = (_params(r.loss) for r in runs)
    assert eager.keys() == fast.keys()
    for name in eager:
        torch.testing.assert_close(fast[name], eager[name], atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def _small_a2c(device: str, **options):
    agent, _, rollouts = _a2c(device, actor_hidden=(16, 16), critic_hidden=(16, 16), **options)
    return agent, lambda: rollouts.collect(agent.actor, T)


def _small_kl(device: str, **options):
    learner, behaviour, _, rollouts = _kl(device, student_hidden=(16, 16), **options)
    return learner, lambda: rollouts.collect(behaviour, T)


@pytest.mark.slow
def test_compiled_a2c_and_kl_updates_equal_eager():
    _same_updates(_small_a2c, _a2c_updates, "cpu", compile=True)
    _same_updates(_small_kl, _kl_updates, "cpu", compile=True)


@pytest.mark.cuda
@pytest.mark.skipif(NO_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("speed", [{"cudagraphs": True}, {"compile": True, "cudagraphs": True}])
def test_cuda_graph_a2c_and_kl_updates_equal_eager(speed):
    _same_updates(_small_a2c, _a2c_updates, "cuda", **speed)
    _same_updates(_small_kl, _kl_updates, "cuda", **speed)


def test_bfloat16_autocasts_the_updates_on_the_device_type(monkeypatch):
    """The losses run under autocast (bfloat16 matmuls inside) and the update stays close to float32's."""
    seen: list[bool] = []
    after = {}
    for precision in ("float32", "bfloat16"):
        agent, _, rollouts = _a2c(precision=precision)
        batch = rollouts.collect(agent.actor, T)
        learner, behaviour, _, kl_rollouts = _kl(precision=precision)
        kl_batch = kl_rollouts.collect(behaviour, T)
        seen.clear()
        with monkeypatch.context() as m:
            m.setattr(torch, "addmm", _autocast_probe(torch.addmm, seen))
            _a2c_updates(agent, batch)
            _kl_updates(learner, kl_batch)
        assert seen and set(seen) == {precision == "bfloat16"}, seen
        after[precision] = {**_params(agent.loss), **{f"kl.{n}": p for n, p in _params(learner.loss).items()}}
    for name, value in after["float32"].items():
        assert torch.isfinite(after["bfloat16"][name]).all(), name
        torch.testing.assert_close(after["bfloat16"][name], value, atol=0.05, rtol=0.05, msg=name)
    assert any(not torch.equal(after["bfloat16"][n], v) for n, v in after["float32"].items())


def _autocast_probe(fn, seen: list[bool]):
    def call(*args, **kwargs):
        if torch.is_grad_enabled():  # the losses' forward (the advantage is computed in float32 under no_grad)
            seen.append(torch.is_autocast_enabled("cpu"))
        return fn(*args, **kwargs)
    return call


# ------------------------------------------------------------------------------------------------ GPU runs
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(NO_CUDA, reason="needs CUDA")])])
def test_the_three_recipes_run_on_the_device_and_their_model_pt_loads_on_the_cpu(tmp_path, device):
    from tdmt.algos import finetune

    common = dict(seed=0, eval_episodes=2, log_every=20, checkpoint_every=0, progress=False, device=device)
    a2c_cfg = a2c_multitask.Config(suite=SUITE, run_dir=str(tmp_path / "a2c"), total_steps=40, eval_every=20,
                                   num_envs_per_task=2, **common)
    a2c_multitask.run(a2c_cfg)
    kl_cfg = distill_kl.Config(suite=SUITE, run_dir=str(tmp_path / "kl"), teacher_algo="sac", teacher_total_steps=30,
                               sac_random_frames=10, sac_hidden=(16, 16), sac_batch_size_per_task=8,
                               total_steps=40, eval_every=0, num_envs_per_task=2, **common)
    distill_kl.run(kl_cfg)
    finetune.run(finetune.Config(suite=SUITE, source_task="PendulumGravityHigh", target_task="PendulumGravityLow",
                                 run_dir=str(tmp_path / "ft"), source_frames=20, target_frames=20, eval_every=10,
                                 num_envs_per_task=2, scratch_target=False, **common))
    for path in [tmp_path / "a2c" / "model.pt", tmp_path / "kl" / "model.pt", tmp_path / "kl" / "teachers" /
                 "model.pt", tmp_path / "ft" / "target" / "model.pt"]:
        state = torch.load(path, weights_only=False)  # no map_location: every tensor must already be a CPU one
        devices = {t.device.type for t in torch.utils._pytree.tree_leaves(state) if isinstance(t, torch.Tensor)}
        assert devices == {"cpu"}, (path, devices)
    env = make_env(SUITE, num_envs_per_task=1, task_onehot=False)
    for module, cfg in ((a2c_multitask, a2c_cfg), (distill_kl, kl_cfg)):
        out = module.load_model_policy(cfg, str(tmp_path / ("a2c" if module is a2c_multitask else "kl") /
                                                "model.pt"))(env.reset())
        assert out["action"].device.type == "cpu"


def test_the_update_benchmark_writes_its_rows_with_ratios_to_eager_float32(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "rows.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "a2c_update.py"
    run = subprocess.run([sys.executable, str(script), "--suite", SUITE, "--envs", "2", "--repeats", "1",
                          "--iterations", "1", "--precision", "float32", "bfloat16", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["a2c eager float32", "a2c eager bfloat16", "kl eager float32",
                                            "kl eager bfloat16"]
    assert all(r["unit"] == "updates/s" and r["per_s"] > 0 for r in rows)
    assert rows[0]["ratio"] == rows[2]["ratio"] == 1.0 and rows[1]["reference"] == "a2c eager float32"
    bad = subprocess.run([sys.executable, str(script), "--cudagraphs"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--cudagraphs with --device='cpu' is not valid" in bad.stderr.splitlines()[-1]
