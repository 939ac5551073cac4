"""Multi-head networks and the multi-head A2C update (Arora et al. §3.1.4, §4.3.1)."""

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

from tdmt.algos.a2c_multitask import A2CAgent, Config, Rollouts, make_agent, step_keeping_other_rows
from tdmt.envs import make_env
from tdmt.modules.multihead import MultiHeadMLP, actor_log_std, actor_net

K = 3


def _reference(net: MultiHeadMLP, x: torch.Tensor, k: int) -> torch.Tensor:
    """Row-by-row forward through task k's parameters (what every routing path must reproduce)."""
    h = x
    for layer in net.trunk:
        h = layer(h) if isinstance(layer, torch.nn.Linear) else h @ layer.weight[k] + layer.bias[k, 0]
        h = torch.tanh(h)
    return h @ net.head.weight[k] + net.head.bias[k, 0]


@pytest.mark.parametrize("shared", [True, False])
def test_every_routing_path_applies_each_rows_task_parameters(shared):
    torch.manual_seed(0)
    net = MultiHeadMLP(K, 5, 2, hidden=(8, 8), shared_trunk=shared)
    x = torch.randn(K, 4, 5)
    expected = torch.stack([_reference(net, x[k], k) for k in range(K)])
    task_major = torch.arange(K).view(K, 1).expand(K, 4)
    torch.testing.assert_close(net(x, task_major), expected)  # baddbmm over [K, N]
    torch.testing.assert_close(net(x[1], torch.ones(4, dtype=torch.long)), expected[1])  # one task
    perm = torch.randperm(K * 4)
    mixed = net(x.reshape(-1, 5)[perm], task_major.reshape(-1)[perm])  # gathered per row
    torch.testing.assert_close(mixed, expected.reshape(-1, 2)[perm])


def test_bad_task_id_is_reported():
    net = MultiHeadMLP(K, 5, 2)
    with pytest.raises(ValueError, match=r"task_id out of range \[0, 3\)"):
        net(torch.randn(2, 5), torch.tensor([0, 3]))


def _cfg(**kw) -> Config:
    return Config(**{"suite": "pendulum-mt3", "num_envs_per_task": 2, "t_max": 5, **kw})


def _agent_and_batch(seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = _cfg(**kw)
    env = make_env(cfg.suite, seed=seed, num_envs_per_task=cfg.num_envs_per_task, task_onehot=False)
    agent = make_agent(cfg, env)
    batch = Rollouts(env).collect(agent.actor, cfg.t_max)
    env.close()
    return agent, batch


def _snapshot(agent: A2CAgent) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.detach().clone() for i, net in enumerate(agent.nets) for n, p in net.named_parameters()}


def test_rollout_layout_is_tasks_envs_time():
    agent, batch = _agent_and_batch()
    assert batch.batch_size == (K, 2, 5)
    assert torch.equal(batch["task_id"][:, 0, 0], torch.arange(K))
    assert batch["action"].abs().max() > 1.0  # the paper's unsquashed Gaussian (σ = 1 at start); the env clips
    assert torch.equal(batch["action_dim_mask"], torch.ones(K, 2, 5, 1))


@pytest.mark.parametrize("task", [0, 1])
def test_multihead_update_on_task_i_leaves_other_heads_unchanged(task):
    agent, batch = _agent_and_batch()
    # one update on every task first, so that RMSprop holds statistics for every head
    for k in range(K):
        agent.update(batch[k], task=k)
    before = _snapshot(agent)
    state_before = {id(p): agent.optim.state[p]["square_avg"].clone() for p in agent.optim.state}
    stats = agent.update(batch[task], task=task)
    after = _snapshot(agent)
    others = [k for k in range(K) if k != task]
    stacked = [n for n in after if ".head." in n or n.startswith("1.trunk.1.")]  # the critic's 2nd layer: per task
    assert len(stacked) == 6
    for name in after:
        if name in stacked:
            assert torch.equal(after[name][others], before[name][others]), name
            assert not torch.equal(after[name][task], before[name][task]), name
        else:  # the shared layers (actor 2, critic 1) learn from every task
            assert not torch.equal(after[name], before[name]), name
    for p in agent.stacked:  # the other tasks' rows and RMSprop statistics are untouched too (log-std included)
        assert torch.equal(agent.optim.state[p]["square_avg"][others], state_before[id(p)][others])
    log_std = actor_log_std(agent.actor)
    assert any(log_std is p for p in agent.stacked)
    assert stats["grad_norm"] > 0 and set(stats) == {"loss_objective", "loss_critic", "entropy", "grad_norm", "sigma"}


def test_independent_update_on_task_i_leaves_other_tasks_networks_unchanged():
    agent, batch = _agent_and_batch(architecture="independent")
    before = _snapshot(agent)
    agent.update(batch[2], task=2)
    after = _snapshot(agent)
    for name in after:
        assert torch.equal(after[name][:2], before[name][:2]), name
        assert not torch.equal(after[name][2], before[name][2]), name


def test_joint_update_moves_every_head_and_heads_only_mode_freezes_the_trunk():
    agent, batch = _agent_and_batch(update="joint")
    before = _snapshot(agent)
    agent.update(batch)
    after = _snapshot(agent)
    for name in (n for n in after if ".head." in n):
        assert all(not torch.equal(after[name][k], before[name][k]) for k in range(K)), name
    agent.freeze_for_finetuning("heads")
    before = _snapshot(agent)
    agent.update(batch)
    after = _snapshot(agent)
    for name in after:
        assert torch.equal(after[name], before[name]) != (".head." in name), name


def test_public_code_finetuning_trains_the_actors_last_hidden_layer_and_the_output_layers():
    agent, batch = _agent_and_batch()
    agent.freeze_for_finetuning("public_code")
    trained = {n for n, p in agent.loss.named_parameters() if p.requires_grad}
    # actor: trunk layer 1 (the last hidden), mean head, log-std; critic: value head only
    assert len(trained) == 7 and all(("trunk.1" in n or "head" in n or "log_std" in n) for n in trained), trained
    assert {n for n in trained if "critic" in n} == {"critic_network_params.module.head.weight",
                                                     "critic_network_params.module.head.bias"}
    before = _snapshot(agent)
    agent.update(batch[0], task=0)
    after = _snapshot(agent)
    moved = {n for n in after if not torch.equal(after[n], before[n])}
    assert moved == {"0.trunk.1.weight", "0.trunk.1.bias", "0.head.weight", "0.head.bias", "1.head.weight",
                     "1.head.bias"}
    with pytest.raises(ValueError, match=r"finetune_layers='all'.*'public_code', 'heads'"):
        agent.freeze_for_finetuning("all")


def test_step_keeping_other_rows_also_holds_adam_momentum_rows():
    w = torch.nn.Parameter(torch.ones(K, 2))
    opt = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.ones(K, 2)
    opt.step()  # every row now has momentum
    before = w.detach().clone()
    w.grad = torch.zeros(K, 2)
    w.grad[1] = 1.0
    step_keeping_other_rows(opt, [w], task=1)
    assert torch.equal(w[[0, 2]], before[[0, 2]])  # plain Adam would have moved them by momentum
    assert not torch.equal(w[1], before[1])


@pytest.mark.parametrize("policy", ["gaussian", "tanh_normal"])
def test_deterministic_action_is_the_mean_or_tanh_of_it(policy):
    agent, batch = _agent_and_batch(policy=policy)
    td = batch[..., 0].select("observation", "task_id")
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        out = agent.actor(td.clone())
    squash = torch.tanh if policy == "tanh_normal" else (lambda x: x)
    torch.testing.assert_close(out["action"], squash(out["loc"]))
    # gaussian: the head is the mean only (σ is a separate per-task parameter); tanh_normal: mean and σ
    assert actor_net(agent.actor).head.weight.shape == (K, 64, 1 if policy == "gaussian" else 2)


def test_n_step_return_equals_torchrls_td1_estimator_through_truncations_and_terminations():
    """The advantage's target (Eq. 3), computed here without host reads, is what TorchRL's TD1 estimator (the loss's
    estimator before) gives on the same rollout: bootstrapped at the rollout end and at a truncation, cut at a
    termination."""
    from torchrl.objectives import ValueEstimators

    from tdmt.algos.a2c_multitask import n_step_return

    agent, batch = _agent_and_batch()
    done, terminated = torch.zeros(K, 2, 5, 1, dtype=torch.bool), torch.zeros(K, 2, 5, 1, dtype=torch.bool)
    done[0, 0, 1] = done[1, 1, 2] = done[2, 0, 3] = done[2, 0, 0] = True  # truncations
    done[1, 0, 1] = terminated[1, 0, 1] = done[0, 1, 3] = terminated[0, 1, 3] = True  # terminations
    batch.set(("next", "done"), done)
    batch.set(("next", "terminated"), terminated)
    batch.set(("next", "reward"), torch.randn(K, 2, 5, 1))
    agent.loss.make_value_estimator(ValueEstimators.TD1, gamma=0.9)
    expected = agent.loss.value_estimator(batch.clone()).get("value_target")
    critic, nxt = agent.critic.module, batch["next"]
    with torch.no_grad():
        got = n_step_return(nxt["reward"], critic(nxt["observation"], nxt["task_id"]), done, terminated, 0.9)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("shared", [True, False])
def test_a_declared_task_layout_routes_as_the_values_do_without_reading_them(shared):
    from tdmt.device import HostSyncCounter
    from tdmt.modules.multihead import task_layout

    torch.manual_seed(0)
    net = MultiHeadMLP(K, 5, 2, hidden=(8, 8), shared_trunk=shared)
    x, task_major = torch.randn(K, 4, 5), torch.arange(K).view(K, 1).expand(K, 4)
    with HostSyncCounter() as syncs:
        with task_layout("task_major"):
            stacked = net(x, task_major)
        with task_layout("one_task"):
            one = net(x[2], torch.full((4,), 2))
    assert syncs.total == 0, syncs.report()
    torch.testing.assert_close(stacked, torch.stack([_reference(net, x[k], k) for k in range(K)]))
    torch.testing.assert_close(one, _reference(net, x[2], 2))
    with pytest.raises(ValueError, match=r"layout='mixed' is not valid; valid: \['task_major', 'one_task'\]"):
        with task_layout("mixed"):
            pass
