"""The README's TorchRL-reuse example runs as written, on the cheap suite with saved teachers."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tdmt.envs import get_suite
from tdmt.modules.teachers import save_teacher

DOC = Path(__file__).resolve().parents[1] / "README.md"


def example_code() -> str:
    text = DOC.read_text()
    match = re.search(r"<!-- ktm-torchrl-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "the TorchRL example block is missing from README.md"
    return match.group(1)


def test_readme_torchrl_example_runs(tmp_path):
    suite = get_suite("pendulum-mt3")
    torch.manual_seed(0)
    for name in suite.task_names:  # untrained native-size teachers (3-dim obs, 1-dim action)
        mlp = [(torch.randn(i, o) * 0.1, torch.zeros(o)) for i, o in ((4, 32), (32, 1))]
        save_teacher({"obs_dim": 3, "act_dim": 1, "actor": [(torch.randn(3, 1), torch.zeros(1))],
                      "critic1": mlp, "critic2": mlp}, tmp_path / name)
    code = example_code()
    for old, new in (('"halfcheetah-mt5"', '"pendulum-mt3"'),
                     ('"runs/my-teachers/teachers"', repr(str(tmp_path))),
                     ("total_frames=100_000", "total_frames=6 * s.num_tasks")):
        assert old in code, f"{old} not found in the README example"
        code = code.replace(old, new)
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - the documented snippet itself
    teachers, loss = scope["teachers"], scope["loss"]
    assert scope["i"] == 5 and len(scope["rb"]) == 18
    assert torch.isfinite(scope["losses"]["loss_qvalue"]) and torch.isfinite(scope["losses"]["loss_actor"])
    assert scope["losses"]["teacher_value"].shape == (256 * 3,)
    assert not any(p is b for p in loss.parameters() for b in teachers.buffers())
