"""``make gpu-check`` (benchmarks/gpu_check.py): its CPU rehearsal (``--dry-run``) runs every planned step and
reports real numbers for each, its budgets fit in 8 minutes, a slow step is stopped at its budget without eating the
others' time, and without CUDA (and without ``--dry-run``) it says so in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tdmt.algos import RECIPES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def section(text: str, heading: str) -> list[list[str]]:
    """The cells of the table rows under the ``## heading`` that starts with ``heading`` (header rows dropped)."""
    body = re.search(rf"^## {re.escape(heading)}.*?\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert body, f"no section {heading!r} in the report"
    lines = body.group(1).splitlines()
    return [[c.strip() for c in line.strip().strip("|").split("|")] for i, line in enumerate(lines)
            if line.startswith("| ") and not (i + 1 < len(lines) and lines[i + 1].startswith("|---"))]


def number(cell: str) -> float:
    return float(re.match(r"^-?[\d,]+(\.\d+)?", cell).group(0).replace(",", ""))


def test_the_dry_run_runs_every_planned_step_and_reports_real_numbers(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out",
                          str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    text = (tmp_path / "gpu-report.md").read_text()
    assert out.returncode == 0, text[-3000:] + out.stderr[-2000:]
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC · GPU: \*\*none \(dry run", text, re.M)
    assert f"torch {torch.__version__}" in text
    planned = gpu_check.plan(True, tmp_path)
    steps = {(r[0], r[1]): r for r in section(text, "Every step")}
    assert set(steps) == {(s.section, s.name) for s in planned}
    for step in planned:
        assert steps[step.section, step.name][2] == ("planned" if "cudagraphs" in step.name else "ok")

    [tests] = section(text, "1. CUDA-marked tests")
    passed, failed, skipped = (number(c) for c in tests[1:4])
    assert passed == failed == 0 and skipped >= 1  # CUDA-marked tests exist and are skipped here, with the reason
    assert "needs" in tests[-1]
    recipes = {r[0].strip("`"): r for r in section(text, "2. Every recipe")}
    assert set(recipes) == set(RECIPES)
    for row in recipes.values():
        assert number(row[1]) > 0 and -2000 < number(row[2]) <= 0 and number(row[3]) > 0  # pendulum returns < 0
    updates = section(text, "3. Updates/s")
    pivot = [r for r in updates if len(r) == 8]
    assert {r[0] for r in pivot} == {b.title for b in gpu_check.BENCHES}
    for row in pivot:  # eager and compile in both precisions; CUDA graphs only where CUDA is
        eager32, compile32, graphs32, eager16, compile16, graphs16 = row[2:]
        assert graphs32 == graphs16 == "–"
        assert number(eager32) > 0 and "(1.00×)" in eager32
        others = (compile32, eager16, compile16)
        if row[1].endswith("reference"):  # ktm_step's public-code loop: eager float32 only
            assert others == ("–",) * 3
        else:
            assert all(number(c) > 0 and re.search(r"\(\d+\.\d\d×\)", c) for c in others), row
    assert sum(not r[1].endswith("reference") for r in pivot) >= len(gpu_check.BENCHES)
    [loop] = section(text, "4. Full loop")[:1]
    assert loop[:2] == ["pendulum-mt3", "cpu"] and number(loop[2]) > 0 and number(loop[5]) > 0
    hours = section(text, "4. Full loop")[1:]
    assert [r[0] for r in hours] == [p[0] for p in gpu_check.PAPERS]
    assert all(number(r[2]) > 0 for r in hours)


def test_the_budgets_fit_in_8_minutes_and_every_recipe_is_planned(tmp_path):
    full, dry = gpu_check.plan(False, tmp_path), gpu_check.plan(True, tmp_path)
    assert sum(s.budget_s for s in full) <= 8 * 60 - 10
    assert [s.name for s in full] == [s.name for s in dry]
    assert [s.name for s in full if s.section == "recipes"] == list(RECIPES)
    for step in full:
        assert "device=cuda" in step.command or "--device" not in step.command or \
            step.command[step.command.index("--device") + 1] == "cuda"
    assert all("device=cpu" in s.command for s in dry if s.section == "recipes")


def test_a_slow_step_is_stopped_at_its_budget_and_leaves_the_others_their_time(tmp_path):
    def step(name: str, sleep_s: float, budget_s: float) -> gpu_check.Step:
        code = f"import time; time.sleep({sleep_s}); print('1 passed in {sleep_s}s')"
        return gpu_check.Step("tests", name, [sys.executable, "-c", code], budget_s)

    steps = [step("slow", 60, 1.5), step("quick", 0, 6), step("uses the spare", 2.5, 1)]
    wall = gpu_check.run_all(steps, tmp_path, dry_run=False)
    assert [s.status for s in steps] == ["timed out", "ok", "ok"]
    assert 1.5 <= steps[0].wall_s < 4 and wall < 15
    assert steps[1].rows == [{"passed": 1, "failed": 0, "skipped": 0, "error": 0}]
    assert (tmp_path / "tests-slow.log").read_text().startswith("$ ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_says_so_in_one_line_and_exits_2(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert re.fullmatch(r"gpu_check: no CUDA device is visible here \(torch [^;]*\); run it on a machine with a GPU, "
                        r"or with --dry-run for the CPU rehearsal\n", out.stderr)
    if torch.version.cuda is None:
        assert "a CPU-only build: install a CUDA build of torch in .venv" in out.stderr
    assert not (tmp_path / "gpu-report.md").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip on a machine without CUDA")
def test_a_cuda_marked_test_is_skipped_with_the_reason_where_cuda_is_absent(tmp_path):
    (tmp_path / "test_needs_gpu.py").write_text(
        "import pytest\n\n\n@pytest.mark.cuda\ndef test_on_the_gpu():\n    assert False\n\n\n"
        "def test_anywhere():\n    assert True\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "--strict-markers", "-rs", "-q",
                          "-p", "no:cacheprovider", str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout[-2000:]
    assert re.search(r"SKIPPED \[1\] .*test_needs_gpu.py:\d+: needs a CUDA device; none is visible here", out.stdout)
    assert "1 passed, 1 skipped" in out.stdout
