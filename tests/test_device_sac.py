"""The multi-task SAC family (``sac_mt``, ``ctpg``) on the device, checked on the CPU (DESIGN §9): no host sync per
update or env step after warm-up, every tensor created on its device, bfloat16 autocast, and ``compile``/
``cudagraphs`` equal to eager.

The env steps on the CPU and hands its batch over once per step; its own ``_step``/``_reset`` are left out of the
counts (``HostSyncCounter.paused``): on a GPU run that transfer is the one crossing a step is allowed.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tensordict import TensorDict

from tdmt.algos import ctpg, sac_mt
from tdmt.algos.sac_mt import Config, EpisodeReturns, MultiTaskSAC
from tdmt.data import PerTaskReplayBuffer
from tdmt.device import HostSyncCounter, factories_on_meta
from tdmt.envs import action_masks, get_suite, make_env
from tdmt.modules import BACKBONES

TINY = dict(suite="pendulum-mt3", hidden=(16, 16), batch_size_per_task=8, buffer_size_per_task=500,
            exploration_steps=5, progress=False, run_dir="/tmp/unused")
SUITE = get_suite("pendulum-mt3")


def random_transitions(n: int) -> TensorDict:
    """``[K, n]`` random control transitions of pendulum-mt3."""
    K, tid = SUITE.num_tasks, torch.arange(SUITE.num_tasks)[:, None].expand(SUITE.num_tasks, n)
    flags = torch.zeros(K, n, 1, dtype=torch.bool)
    return TensorDict({
        "observation": torch.randn(K, n, SUITE.obs_max), "task_id": tid,
        "action": (torch.rand(K, n, SUITE.act_max) * 2 - 1) * action_masks(SUITE.act_dims, SUITE.act_max)[tid],
        "next": {"observation": torch.randn(K, n, SUITE.obs_max), "task_id": tid, "reward": torch.randn(K, n, 1),
                 "done": flags, "terminated": flags.clone()}}, [K, n])


def pause_env(env, counter: HostSyncCounter) -> None:
    """Leave the env's own step and reset out of ``counter`` (the CPU env's one crossing per step)."""
    for name in ("_step", "_reset"):
        inner = getattr(env, name)

        def paused(*args, _inner=inner, **kwargs):
            with counter.paused():
                return _inner(*args, **kwargs)

        setattr(env, name, paused)


def _learner(**overrides) -> tuple[MultiTaskSAC, PerTaskReplayBuffer]:
    torch.manual_seed(0)
    cfg = Config(**{**TINY, "mask_out_start": 0, **overrides})
    replay = PerTaskReplayBuffer(SUITE.num_tasks, 100, cfg.batch_size_per_task)
    replay.extend(random_transitions(20))
    return MultiTaskSAC(cfg, SUITE), replay


@pytest.mark.parametrize("backbone", BACKBONES)
def test_sac_update_makes_no_host_sync(backbone):
    sac, replay = _learner(backbone=backbone)  # mask-out on from the start: PaCo's reset runs in every update
    for _ in range(2):  # warm-up: optimiser states, the replay's fill check
        sac.update(replay.sample(), env_steps=10)
    with HostSyncCounter() as counter:
        for _ in range(3):
            out = sac.update(replay.sample(), env_steps=10)
    assert counter.total == 0, counter.report()
    assert out["loss_qvalue"].shape == (3,) and torch.isfinite(out["loss_qvalue"]).all()


def test_sac_mt_env_steps_and_updates_make_no_host_sync():
    cfg = Config(**TINY)
    sac, replay = _learner()
    env = make_env(cfg.suite, seed=0)
    returns = EpisodeReturns(SUITE.num_tasks, sac.device)
    td = env.reset()
    for step in range(1, 4):  # warm-up, random actions then the policy
        td = sac_mt.env_step(env, td, sac, replay, returns, cfg.reward_scale, random=step == 1)
        sac.update(replay.sample(), env_steps=step)
    with HostSyncCounter() as counter:
        pause_env(env, counter)
        for step in range(4, 14):  # pendulum episodes are 200 steps: none ends here (TorchRL's reset would read)
            td = sac_mt.env_step(env, td, sac, replay, returns, cfg.reward_scale, random=False)
            sac.update(replay.sample(), env_steps=step)
    assert counter.total == 0, counter.report()
    assert replay.num_transitions() == 3 * 20 + 3 * 13 and returns.running.abs().sum() > 0


def test_episode_returns_are_summed_without_reading_the_device():
    returns = EpisodeReturns(2, torch.device("cpu"))
    done = torch.tensor([[False], [False]])
    with HostSyncCounter() as counter:
        returns.add(torch.tensor([[1.0], [2.0]]), done)
        returns.add(torch.tensor([[3.0], [4.0]]), torch.tensor([[True], [False]]))
        returns.add(torch.tensor([[5.0], [6.0]]), done)
    assert counter.total == 0, counter.report()
    assert returns.pop() == {0: 4.0}  # task 0's episode ended (1 + 3); task 1's runs on
    returns.add(torch.tensor([[1.0], [1.0]]), torch.tensor([[True], [True]]))
    assert returns.pop() == {0: 6.0, 1: 13.0} and returns.pop() == {}


@pytest.mark.parametrize("guide", ["ctpg", "qmp", "random"])
def test_ctpg_steps_and_updates_make_no_host_sync(guide):
    """Env step, behaviour draw with both gates (at every step, masked: the CUDA path), guide transitions stored
    with a mask, control update and, every H steps, the guide update (hindsight relabel, spread batch)."""
    torch.manual_seed(0)
    trainer = ctpg.Trainer(ctpg.Config(**{**TINY, "guide": guide, "guide_step": 2, "filter_start": 0,
                                          "guide_hidden": (16,), "backbone": "paco", "mask_out_start": 0}))
    trainer.agent.behaviour.skip_idle_draws = False  # what a CUDA device does
    for step in range(1, 11):  # warm-up: 5 random steps, then updates and guide updates
        trainer.step(step)
    assert trainer.agent.guide is None or trainer.agent.guide.updates == 3
    with HostSyncCounter() as counter:
        pause_env(trainer.env, counter)
        for step in range(11, 17):
            trainer.step(step)
    assert counter.total == 0, counter.report()
    assert trainer.agent.sac.updates == 11
    assert trainer.agent.guide is None or trainer.agent.guide.updates == 6
    metrics = trainer.metrics()  # the one read, at a logging interval
    assert metrics["train/loss_qvalue"] > 0 and ("guide/loss_qvalue" in metrics) == (guide == "ctpg")


def test_guide_replay_stores_only_the_masked_rows_without_reading_them():
    replay = PerTaskReplayBuffer(2, 3, 4)
    td = TensorDict({"task_id": torch.tensor([0, 1, 0, 1]), "x": torch.arange(4.0)}, [4])
    with HostSyncCounter() as counter:
        replay.extend_where(td, torch.tensor([True, False, False, True]))
        replay.extend_where(td.apply(lambda t: t + 10 if t.is_floating_point() else t),
                            torch.tensor([False, False, True, True]))
    assert counter.total == 0, counter.report()
    assert replay.task_data(0)["x"].tolist() == [0.0, 12.0] and replay.task_data(1)["x"].tolist() == [3.0, 13.0]
    for value in (20.0, 30.0):  # task 1's ring (3) wraps; the rows not kept leave the live ones as they were
        replay.extend_where(TensorDict({"task_id": torch.tensor([1, 1]), "x": torch.tensor([value, -1.0])}, [2]),
                            torch.tensor([True, False]))
    assert replay.task_data(1)["x"].tolist() == [30.0, 13.0, 20.0] and replay.task_data(0)["x"].tolist() == [0, 12]
    assert replay._total.tolist() == [2, 4]


def test_sac_mt_collect_and_update_create_tensors_only_on_their_device():
    """Device hygiene: under ``factories_on_meta`` a tensor made without ``device=`` is a meta tensor and fails on
    its first mix with real ones (DESIGN §9)."""
    cfg = Config(**TINY)
    sac, replay = _learner(backbone="paco")
    env = make_env(cfg.suite, seed=0)
    returns = EpisodeReturns(SUITE.num_tasks, sac.device)
    td = sac_mt.env_step(env, env.reset(), sac, replay, returns, cfg.reward_scale, random=True)
    with factories_on_meta():
        for random in (True, False):
            td = sac_mt.env_step(env, td, sac, replay, returns, cfg.reward_scale, random=random)
        out = sac.update(replay.sample(), env_steps=10)
    assert td["observation"].device.type == "cpu" and out["loss_actor"].device.type == "cpu"
    assert replay.num_transitions() == 3 * 20 + 3 * 3


def _compiled_equals_eager(make, update, steps: int, **speed) -> None:
    """``steps`` updates of a learner built by ``make(**speed)`` against the same updates eager, from one seed."""
    results = []
    for options in ({}, speed):
        torch.manual_seed(0)
        learner, batches = make(**options)
        initial = torch.nn.utils.parameters_to_vector(learner.loss.parameters()).detach().clone()
        torch.manual_seed(1)
        for batch in batches[:steps]:
            update(learner, batch.clone())
        results.append(torch.nn.utils.parameters_to_vector(learner.loss.parameters()).detach())
    eager, fast = results
    assert not torch.equal(eager, initial)  # the updates moved the parameters
    torch.testing.assert_close(fast, eager, atol=1e-5, rtol=1e-4)


def _make_sac(**speed):
    torch.manual_seed(0)
    sac = MultiTaskSAC(Config(**{**TINY, "hidden": (8,), **speed}), SUITE)
    return sac, [random_transitions(8) for _ in range(4)]


def _make_guide(**speed):
    torch.manual_seed(0)
    agent = ctpg.CTPGAgent(ctpg.Config(**{**TINY, "hidden": (8,), "guide_hidden": (8,), "guide_step": 2, **speed}),
                           SUITE)
    replay = PerTaskReplayBuffer(SUITE.num_tasks, 50, 8)
    K, n, H = SUITE.num_tasks, 20, 2
    tid = torch.arange(K)[:, None].expand(K, n)
    replay.extend(TensorDict({
        "observation": torch.randn(K, n, SUITE.obs_max), "task_id": tid, "action": torch.randint(0, K, (K, n)),
        "num_steps": torch.full((K, n), H), "seq_observation": torch.randn(K, n, H, SUITE.obs_max),
        "seq_action": torch.rand(K, n, H, SUITE.act_max) * 1.8 - 0.9,
        "seq_valid": torch.ones(K, n, H, dtype=torch.bool),
        "next": {"observation": torch.randn(K, n, SUITE.obs_max), "reward": torch.randn(K, n, 1),
                 "done": torch.zeros(K, n, 1, dtype=torch.bool), "terminated": torch.zeros(K, n, 1, dtype=torch.bool)},
    }, [K, n]))
    blocked = torch.tensor([False, True, False])
    return agent.guide, [ctpg.guide_batch(replay, blocked, spread=True) for _ in range(4)]


@pytest.fixture
def eager_random_numbers():
    """Inductor draws random numbers its own way; with ``fallback_random`` it calls eager's, so that compiled and
    eager updates sample the same actions."""
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    with inductor.patch(fallback_random=True):
        yield
    torch._dynamo.reset()


def test_compiled_sac_update_equals_eager(eager_random_numbers):
    _compiled_equals_eager(_make_sac, lambda sac, b: sac.update(b, env_steps=1), 4, compile=True)


def test_compiled_guide_update_equals_eager(eager_random_numbers):
    _compiled_equals_eager(_make_guide, lambda guide, b: guide.update(b), 4, compile=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make,update", [(_make_sac, lambda sac, b: sac.update(b.to("cuda"), env_steps=1)),
                                         (_make_guide, lambda guide, b: guide.update(b.to("cuda")))],
                         ids=["sac", "guide"])
def test_cuda_graph_updates_equal_eager(make, update):
    _compiled_equals_eager(lambda **speed: make(device="cuda", **speed), update, 4, cudagraphs=True)


@pytest.mark.parametrize("learner", ["sac", "guide"])
def test_bfloat16_autocasts_the_update_on_the_device_type(learner, monkeypatch):
    seen = []
    real = torch.autocast

    def spy(device_type, *args, **kwargs):
        seen.append((device_type, kwargs.get("dtype")))
        return real(device_type, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    make, update = (_make_sac, lambda sac, b: sac.update(b, env_steps=1)) if learner == "sac" else \
        (_make_guide, lambda guide, b: guide.update(b))
    obj, batches = make(precision="bfloat16")
    out = update(obj, batches[0])
    assert seen == [("cpu", torch.bfloat16)]
    assert all(torch.isfinite(v).all() for v in out.values())
    assert dataclasses.replace(obj.cfg, precision="float32").precision == "float32"


def test_the_every_task_blocked_check_is_answered_on_the_host_and_survives_a_resume():
    """``guide_block=success`` blocks every task once each succeeds above the threshold: decided from the evaluation
    the host already read (no sync per guide update), and restored with the checkpoint."""
    def agent() -> ctpg.CTPGAgent:
        return ctpg.CTPGAgent(ctpg.Config(**{**TINY, "hidden": (8,), "guide_hidden": (8,), "guide_block": "success"}),
                              SUITE)

    first = agent()
    assert not first.all_blocked()
    with HostSyncCounter() as syncs:
        first.set_success([0.9, 0.5, 0.95])
        partly = first.all_blocked()
        first.set_success([0.9, 0.85, 0.95])
        every = first.all_blocked()
    assert (partly, every) == (False, True) and syncs.total == 0, syncs.report()
    resumed = agent()
    resumed.load_state_dict(first.state_dict())
    assert resumed.all_blocked()
