"""The TD3 family (``train_teachers``, ``ktm_drl``, ``td3_mt`` and G-Surgery) on the training device, checked on this
CPU the way DESIGN §9 says a GPU run would behave:

* zero host–device synchronisations per update of every learner schedule and per env step of every collector
  (the env's own host step left out: it must hand its action to MuJoCo), episode ends included;
* every tensor a collect step or an update creates is made on an explicit device (``factories_on_meta``);
* ``compile=`` (and, where CUDA is present, ``cudagraphs=``) give the eager updates' parameters;
* ``precision=bfloat16`` autocasts the losses and leaves parameters, optimiser states and devices as they were;
* checkpoints and teacher files are host tensors that load anywhere; a run resumes under another device string.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import pytest
import torch

from tdmt.algos import ktm_drl, td3_common, td3_mt, teachers
from tdmt.algos.run import StopRequested, TrainingRun
from tdmt.algos.td3_common import EpisodeTurns, OnlineCollector, TD3Learner, sample_task
from tdmt.config import parse_args
from tdmt.device import HostSyncCounter, factories_on_meta
from tdmt.envs import action_masks, get_suite, make_env
from tdmt.modules.td3 import make_student_actor
from tdmt.modules.teachers import StackedTeachers

SUITE = "control-mt2"  # heterogeneous (Pendulum: obs 3, act 1, 200 steps; Reacher: obs 10, act 2, 50 steps)
TINY = dict(suite=SUITE, hidden=(16,), batch_size_per_task=8, buffer_size_per_task=500, progress=False)
LEARNERS = ["ktm per_task", "ktm batched", "ktm w/o HER", "teachers", "td3_mt per_task", "G-Surgery"]


def random_teachers(hidden: int = 16) -> StackedTeachers:
    suite = get_suite(SUITE)

    def mlp(i: int, o: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.randn(i, hidden) * 0.3, torch.randn(hidden) * 0.1), (torch.randn(hidden, o) * 0.3,
                                                                              torch.randn(o) * 0.1)]

    return StackedTeachers([{"obs_dim": o, "act_dim": a, "actor": mlp(o, a), "critic1": mlp(o + a, 1),
                             "critic2": mlp(o + a, 1)} for o, a in zip(suite.obs_dims, suite.act_dims)],
                           suite.obs_max, suite.act_max)


def build(name: str, **cfg) -> TD3Learner:
    """The learner of recipe ``name``, built by the recipe's own builder."""
    suite = get_suite(SUITE)
    masks = action_masks(suite.act_dims, suite.act_max)
    if name.startswith("ktm"):
        schedule = "batched" if name == "ktm batched" else "per_task"
        config = ktm_drl.Config(update_schedule=schedule, per_task_replay=name != "ktm w/o HER", **TINY, **cfg)
        return ktm_drl.build_student(config, suite, masks, random_teachers(), "offline")
    if name == "teachers":
        return teachers.build_teachers(teachers.Config(**TINY, **cfg), suite, masks)
    pcgrad = name == "G-Surgery"
    config = td3_mt.Config(pcgrad=pcgrad, update_schedule="batched" if pcgrad else "per_task", **TINY, **cfg)
    return td3_mt.build_agent(config, suite, masks)


def filled_collector(steps: int = 12) -> OnlineCollector:
    collector = OnlineCollector(make_env(SUITE, seed=0), 100, TINY["batch_size_per_task"])
    actor = make_student_actor(collector.env.suite.obs_max, collector.env.suite.act_max, 2, (8,))
    for _ in range(steps):
        collector.step(actor, 0.1, random=True)
    return collector


def epoch(name: str, learner: TD3Learner, collector: OnlineCollector, offline: bool) -> None:
    """One epoch of the recipe's loop (sampling included): K updates, or one batched update, or "w/o HER"'s K
    single-task updates; offline as Algorithm 1's first stage (actor at every update, no soft update)."""
    learner.loss.mode = "offline" if offline and name.startswith("ktm") else "online"
    options = {"actor_every": 1, "soft_update": False} if learner.loss.mode == "offline" else {}
    if name == "ktm w/o HER":
        for k in range(collector.num_tasks):
            learner.update_task(sample_task(collector.buffer, k, TINY["batch_size_per_task"]), k, **options)
    else:
        learner.update(collector.sample(), **options)


def run_epochs(name: str, learner: TD3Learner, collector: OnlineCollector) -> None:
    for offline in (True, True, False, False):  # both stages; online with and without the actor step
        epoch(name, learner, collector, offline)


def paused(counter: HostSyncCounter, fn: Callable) -> Callable:
    """``fn`` with the counter paused: the env's own host step (its action must reach MuJoCo)."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        with counter.paused():
            return fn(*args, **kwargs)

    return call


# ---------------------------------------------------------------------------------------------- host syncs
@pytest.mark.parametrize("name", LEARNERS)
def test_learner_updates_make_no_host_sync(name):
    torch.manual_seed(0)
    learner, collector = build(name), filled_collector()
    run_epochs(name, learner, collector)  # warm-up: optimiser states, the buffer's one-off fill check
    with HostSyncCounter() as syncs:
        for _ in range(2):
            run_epochs(name, learner, collector)
    assert syncs.total == 0, f"{syncs.total} host syncs in 8 epochs of {name}:\n{syncs.report()}"
    stats = learner.read_stats()
    assert set(stats) == {"loss_qvalue", "loss_actor"} and all(v == v for v in stats.values())


def test_online_collector_makes_no_host_sync_episode_ends_included(monkeypatch):
    collector = filled_collector(steps=0)
    env, suite = collector.env, collector.env.suite
    actor = make_student_actor(suite.obs_max, suite.act_max, 2, (8,))
    syncs = HostSyncCounter()
    monkeypatch.setattr(env, "_step", paused(syncs, env._step))
    monkeypatch.setattr(env, "_reset", paused(syncs, env._reset))
    for random in (True, False):
        collector.step(actor, 0.1, random=random)
    collector.sample(), collector.ready(2)
    with syncs:
        for t in range(210):  # Pendulum's 200-step and Reacher's 50-step episodes end inside
            collector.step(actor, 0.1, random=t % 2 == 0)
            collector.sample()
            assert collector.ready(2)
    assert syncs.total == 0, f"{syncs.total} host syncs in 210 env steps:\n{syncs.report()}"
    returns = collector.read_returns()  # read at a logging interval: one mean per task with an ended episode
    assert sorted(returns) == [0, 1] and all(r < 0 for r in returns.values())
    assert collector.read_returns() == {}  # read and cleared


def test_episode_turns_make_no_host_sync_after_every_task_has_data():
    suite = get_suite(SUITE)
    actor = make_student_actor(suite.obs_max, suite.act_max, 2, (8,))
    turns = EpisodeTurns(suite, seed=0, capacity_per_task=1000, batch_size_per_task=4)
    syncs = HostSyncCounter()
    for env in turns.envs:
        env.step, env.reset = paused(syncs, env.step), paused(syncs, env.reset)
    for _ in range(251):  # warm-up: one whole episode of each task (200 + 50 steps), then the first sample
        turns.sample(turns.step(actor, 0.1))
    with syncs:
        stepped = [turns.step(actor, 0.1) for _ in range(260)]  # Pendulum's episode ends, Reacher's begins
        samples = [turns.sample(k) for k in (0, 1)]
    assert syncs.total == 0, f"{syncs.total} host syncs in 260 env steps:\n{syncs.report()}"
    assert set(stepped) == {0, 1} and [bool((s["task_id"] == k).all()) for k, s in enumerate(samples)] == [True] * 2
    turns.close()


# ---------------------------------------------------------------------------------------------- device hygiene
@pytest.mark.parametrize("name", LEARNERS)
def test_collect_and_update_create_every_tensor_on_an_explicit_device(name):
    """Built first (TorchRL's constructors call ``.item()``), then a collect step (policy and random actions) and
    an epoch of both stages with the default device set to ``meta``: a tensor made without ``device=`` fails."""
    torch.manual_seed(0)
    learner, collector = build(name), filled_collector()
    run_epochs(name, learner, collector)
    actor = learner.loss.actor_network
    before = learner.loss.actor_network_params.clone()
    with factories_on_meta():
        collector.step(actor, 0.1)
        collector.step(actor, 0.1, random=True)
        run_epochs(name, learner, collector)
    for key, value in learner.loss.actor_network_params.items(True, True):
        assert value.device.type == "cpu" and torch.isfinite(value).all(), key
        assert not torch.equal(value, before[key]), key  # the updates ran
    assert collector.buffer.num_transitions(0) == 14


def test_episode_turns_create_every_tensor_on_an_explicit_device():
    suite = get_suite(SUITE)
    actor = make_student_actor(suite.obs_max, suite.act_max, 2, (8,))
    turns = EpisodeTurns(suite, seed=0, capacity_per_task=100, batch_size_per_task=4)
    turns.step(actor, 0.1)
    with factories_on_meta():
        sample = turns.sample(turns.step(actor, 0.1))
    assert sample["observation"].device.type == "cpu" and turns.buffer.num_transitions(0) == 2
    turns.close()


# ---------------------------------------------------------------------------------------------- speed options
def _updates_agree(device: str, **option) -> None:
    """8 per-task rounds (KTM-DRL online, the actor every other round) eager and with ``option``, from the same
    initial state, batch and noise: every parameter and target agrees."""
    torch.manual_seed(0)
    eager = build("ktm per_task", device=device)
    torch.manual_seed(0)
    fast = build("ktm per_task", device=device, **option)
    fast.loss.load_state_dict(eager.loss.state_dict())
    batch = filled_collector().sample().to(device)
    for learner in (eager, fast):
        learner.loss.mode = "online"
    for i in range(8):  # 2 warm-up calls per branch, then the compiled / captured ones
        for learner in (eager, fast):
            torch.manual_seed(100 + i)
            learner.update(batch)
    moved = 0.0
    for key, value in eager.loss.state_dict().items():
        torch.testing.assert_close(fast.loss.state_dict()[key], value, atol=1e-5, rtol=1e-5, msg=key)
    for key, value in eager.loss.actor_network_params.items(True, True):
        moved = max(moved, float((value - build("ktm per_task", device=device).loss.actor_network_params[key])
                                 .abs().max()))
    assert moved > 0  # the updates changed the actor
    for name in ("loss_qvalue", "loss_actor"):
        torch.testing.assert_close(fast.stats[name], eager.stats[name], atol=1e-5, rtol=1e-5)


def test_compiled_updates_equal_eager(monkeypatch):
    import torch._dynamo
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # the eager random streams
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    _updates_agree("cpu", compile=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # compiled code ran, not only warm-up


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_updates_equal_eager():
    _updates_agree("cuda", cudagraphs=True)


def test_device_options_are_refused_where_they_cannot_run(monkeypatch):
    with pytest.raises(ValueError, match="cudagraphs=True with a loss on cpu"):
        TD3Learner(build("ktm per_task").loss, 1e-3, 0.005, cudagraphs=True, schedule="per_task")
    with pytest.raises(ValueError, match="^compile=true with pcgrad=true is not valid; valid: compile=false"):
        parse_args(td3_mt.Config, ["pcgrad=true", "update_schedule=batched", "compile=true"])
    with pytest.raises(ValueError, match="replay_device='gpu' is not valid; valid: cpu, cuda"):
        td3_mt.Config(replay_device="gpu").validate()
    with pytest.raises(ValueError, match="^replay_device='cuda' but no CUDA device is visible"):
        teachers.Config(replay_device="cuda").validate()
    monkeypatch.setattr(td3_common, "resolve_device", torch.device)  # as on a GPU node
    with pytest.raises(ValueError, match="^storage='memmap' with replay_device='cuda' is not valid; valid: "
                                         "replay_device=cpu"):
        ktm_drl.Config(storage="memmap", replay_device="cuda").validate()
    ktm_drl.Config(storage="memmap", replay_device="cpu").validate()


def test_memmap_replay_lives_in_the_run_folder(tmp_path):
    run_dir = tmp_path / "mm"
    td3_mt.run(td3_mt.Config(run_dir=str(run_dir), storage="memmap", total_steps=12, start_steps=6, eval_every=12,
                             checkpoint_every=0, eval_episodes=1, **TINY))
    files = [p for p in (run_dir / "replay-storage").rglob("*") if p.is_file()]
    assert files and sum(p.stat().st_size for p in files) >= 2 * 500 * 10 * 4  # [K, C] rings of 10-dim observations


# ---------------------------------------------------------------------------------------------- precision
def test_bfloat16_autocasts_the_losses_and_changes_nothing_else():
    """``precision=bfloat16`` on the CPU: the losses are computed in bf16 (autocast on the training device's type);
    parameters, targets and Adam moments stay float32 on the same device, and the updates land within a few Adam
    steps of the float32 ones."""
    learners = {}
    batch = filled_collector().sample()
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        learners[precision] = build("ktm per_task", precision=precision)
        learners[precision].loss.mode = "online"
        for i in range(2):
            torch.manual_seed(100 + i)
            learners[precision].update(batch)
    fp32, bf16 = learners["float32"], learners["bfloat16"]
    for name in ("loss_qvalue", "loss_actor"):  # computed in bf16: close to, not equal to, the float32 losses
        assert not torch.equal(bf16.stats[name], fp32.stats[name]), name
        torch.testing.assert_close(bf16.stats[name].float(), fp32.stats[name], rtol=0.05, atol=0.05)
    steps = 2 * get_suite(SUITE).num_tasks  # critic steps per run: K per round
    for key, value in fp32.loss.state_dict().items():
        other = bf16.loss.state_dict()[key]
        assert other.dtype == value.dtype and other.device == value.device, key
        if value.is_floating_point():
            assert float((other - value).abs().max()) <= 2 * 4 * fp32.lr * steps, key
    assert any(not torch.equal(v, bf16.loss.state_dict()[k]) for k, v in fp32.loss.state_dict().items())
    for optim in (bf16.actor_optim, bf16.critic_optim):
        for state in optim.state.values():
            assert state["exp_avg"].dtype == torch.float32 and state["exp_avg_sq"].dtype == torch.float32


# ---------------------------------------------------------------------------------------------- checkpoints
def _stop_at(monkeypatch, stop_step: int) -> None:
    original = TrainingRun.maybe_checkpoint

    def maybe_checkpoint(self, step, get_state, buffers=None):
        original(self, step, get_state, buffers)
        if step == stop_step:
            self.request_stop()

    monkeypatch.setattr(TrainingRun, "maybe_checkpoint", maybe_checkpoint)


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def test_a_run_resumes_under_another_device_string_from_host_loadable_state(tmp_path, monkeypatch, capsys):
    """``device`` and ``replay_device`` do not name the run: a run stopped with ``replay_device`` empty resumes with
    ``replay_device=cpu`` (on a GPU node: ``device=cuda`` after ``cpu`` and back). What it saved loads with
    ``map_location="cpu"``, and the teacher files of ``train_teachers`` are compact host tensors."""
    run_dir = tmp_path / "mt"
    cfg = dict(total_steps=30, start_steps=10, eval_every=30, checkpoint_every=10, eval_episodes=1, **TINY)
    with monkeypatch.context() as m:
        _stop_at(m, 20)
        with pytest.raises(StopRequested):
            td3_mt.run(td3_mt.Config(run_dir=str(run_dir), device="cpu", **cfg))
    state = torch.load(run_dir / "checkpoints" / "step_0000000020" / "state.pt", map_location="cpu",
                       weights_only=False)["state"]["train"]
    assert state["updates"] == 10 and all(t.device.type == "cpu" for t in _tensors(state))
    td3_mt.run(td3_mt.Config(run_dir=str(run_dir), device="cpu", replay_device="cpu", **cfg))
    assert "from step 20" in capsys.readouterr().out
    assert json.loads((run_dir / "state.json").read_text())["state"] == "done"

    teachers_dir = tmp_path / "teachers"
    teachers.run(teachers.Config(run_dir=str(teachers_dir), total_steps=20, start_steps=10, eval_every=20,
                                 checkpoint_every=0, eval_episodes=1, **TINY))
    for name in get_suite(SUITE).task_names:
        saved = torch.load(teachers_dir / "teachers" / name / "teacher.pt", map_location="cpu", weights_only=True)
        for t in _tensors(saved):
            assert t.device.type == "cpu" and t.untyped_storage().nbytes() == t.numel() * t.element_size(), name
    StackedTeachers.load(teachers_dir / "teachers", get_suite(SUITE).task_names, 10, 2)


def test_learner_state_loads_into_a_learner_from_cpu_tensors(tmp_path):
    """What a GPU run saved is read with ``map_location="cpu"`` and copied into the learner's own tensors on its
    device: parameters, targets, Adam moments and the update count come back; no parameter tensor is replaced."""
    torch.manual_seed(0)
    trained, collector = build("ktm per_task"), filled_collector()
    run_epochs("ktm per_task", trained, collector)
    torch.save(trained.state_dict(), tmp_path / "learner.pt")
    fresh = build("ktm per_task")
    own = fresh.loss.state_dict()
    fresh.load_state_dict(torch.load(tmp_path / "learner.pt", map_location="cpu", weights_only=False))
    for key, value in trained.loss.state_dict().items():
        if key.startswith("teachers."):  # the teachers are not the learner's state (re-read from their files)
            continue
        assert torch.equal(fresh.loss.state_dict()[key], value), key
        assert fresh.loss.state_dict()[key].data_ptr() == own[key].data_ptr(), key  # copied in place
    assert fresh.updates == trained.updates == 4
    for mine, theirs in ((fresh.critic_optim, trained.critic_optim), (fresh.actor_optim, trained.actor_optim)):
        pairs = list(zip(mine.state.values(), theirs.state.values()))
        assert pairs and all(torch.equal(a["exp_avg"], b["exp_avg"]) and a["exp_avg"].device == fresh.device
                             for a, b in pairs)
