"""The README's and docs' commands run as written: every recipe command parses and validates, every sweep command
expands, and the README's smoke block runs end to end (two KTM-DRL configurations land in two folders)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tdmt import launch
from tdmt.algos import get_recipe
from tdmt.config import parse_args

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RECIPE_SCRIPT = re.compile(r"^(?:\S*python\S*\s+)?recipes/(\w+)\.py\b")


def shell_commands(text: str) -> list[str]:
    """Lines of the ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _all_commands() -> list[tuple[str, str]]:
    return [(path.name, cmd) for path in DOCS for cmd in shell_commands(path.read_text())]


RECIPE_COMMANDS = [(doc, cmd) for doc, cmd in _all_commands() if RECIPE_SCRIPT.match(cmd)]
SWEEP_COMMANDS = [(doc, cmd) for doc, cmd in _all_commands() if re.match(r"^(\S*/)?tdmt sweep ", cmd)]


def test_the_docs_have_commands():
    assert len(RECIPE_COMMANDS) >= 12 and len(SWEEP_COMMANDS) >= 3


@pytest.mark.parametrize("doc, command", RECIPE_COMMANDS, ids=[c for _, c in RECIPE_COMMANDS])
def test_every_recipe_command_parses_and_validates(doc, command, monkeypatch):
    monkeypatch.chdir(ROOT)
    words = shlex.split(command)
    script = next(w for w in words if w.startswith("recipes/"))
    name = RECIPE_SCRIPT.match(script).group(1)
    args = [w for w in words[words.index(script) + 1:] if w != "--help"]
    parse_args(get_recipe(name).Config, args)


@pytest.mark.parametrize("doc, command", SWEEP_COMMANDS, ids=[c for _, c in SWEEP_COMMANDS])
def test_every_sweep_command_expands(doc, command, monkeypatch):
    monkeypatch.chdir(ROOT)
    words = [w for w in shlex.split(command)[2:] if not w.startswith("--")]
    files = [w for w in words if "=" not in w]
    spec = launch.load_spec(files[0] if files else None, [w for w in words if "=" in w])
    assert launch.expand(spec)


def test_readme_smoke_block_runs_and_the_ablation_gets_its_own_folder(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- readme-smoke -->\n```bash\n(.*?)```", text, re.S)
    assert block, "the smoke block is missing from README.md"
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    outputs = []
    for command in shell_commands(f"```bash\n{block.group(1)}```"):
        words = shlex.split(command)
        if words[0].endswith("python"):
            words[0] = sys.executable
        elif words[0].endswith("tdmt"):
            words[:1] = [sys.executable, "-m", "tdmt.cli"]
        out = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"{command}\n{out.stderr[-3000:]}"
        outputs.append(out.stdout)
    runs = sorted(p.parent for p in (tmp_path / "runs" / "ktm_drl").rglob("summary.json"))
    assert len(runs) == 2, runs
    assert ["alpha=0" in p.name for p in runs].count(True) == 1
    results = [(p / "results.md").read_text() for p in runs]
    assert results[0] != results[1]
    assert "Online w/o Teachers" in (results[0] if "alpha=0" in runs[0].name else results[1])
    listing = outputs[-1]
    for p in runs:
        assert p.name in listing
