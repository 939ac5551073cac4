"""Every paper table's sweep spec runs end to end at a tiny scale (stages in order), and ``tdmt report`` on it puts
the paper's values and ours in the right cells of the paper's layout, flagged as a reduced budget.

Grids are cut to one seed (and, for the largest tables, a few variants and one suite) with command-line
overrides, exactly as a user would do for a smoke run; everything else is the spec file's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tdmt import cli, launch
from tdmt.paper_tables import load_table

SCALE = "scale=0.0002"
CASES = {  # spec -> (paper table, extra overrides, the cells (row, column) that must hold our number)
    "ktm-table1": ("ktm-table1", ["scale=0.0001", 'stages.students.methods.td3_mt.variants={"g_surgery": '
                                  '{"pcgrad": true, "update_schedule": "batched"}}'],
                   [("HCSmallTorso", "KTM-DRL (ours)"), ("HCSmallTorso", "Ideal"), ("HCBigLeg", "G-Surgery [24]"),
                    ("HCSmallFoot", "SAC-MT [6]")]),
    "ktm-table3": ("ktm-table3", ['stages.students.methods.ktm_drl.variants={"full": {}, '
                                  '"no_teacher": {"alpha": 0.0}}'],
                   [("Hopper", "KTM-DRL (ours)"), ("Hopper", "Online w/o Teacher")]),
    "arora-table1": ("arora-table1", ['methods.finetune.variants={"foot_to_leg_scratch": {"source_task": '
                                      '"HalfCheetahSmallFoot", "target_task": "HalfCheetahSmallLeg", '
                                      '"scratch_target": true}}'],
                     [("Scratch 5M", "E1"), ("Scratch 5M", "E2")]),
    "arora-table2": ("arora-table2", ["executor=local"], [("HalfCheetahSmallFoot-v0", "Scratch (3M)"),
                                          ("HalfCheetahBigTorso-v0", "Distillation Multi-task (1M)"),
                                          ("HalfCheetahSmallLeg-v0", "Vanilla Multi-task (1M)")]),
    "ctpg-table1-halfcheetah": ("ctpg-table1", ["suites=[halfcheetah-mt5]", 'methods.ctpg.variants={"none-mhsac": '
                                                '{"guide": "none", "backbone": "mhsac"}, "ctpg-mhsac": '
                                                '{"guide": "ctpg", "backbone": "mhsac"}}'],
                                [("HalfCheetah MT5 | Base", "MHSAC"), ("HalfCheetah MT5 | w/ CTPG", "MHSAC")]),
    "ctpg-table1-metaworld": ("ctpg-table1", ["scale=0.00004", "suites=[metaworld-mt10]",
                                              'methods.ctpg.variants={"ctpg-mtsac": {"guide": "ctpg", '
                                              '"backbone": "mtsac"}}'],
                              [("MetaWorld MT10 | w/ CTPG", "MTSAC")]),
}


@pytest.mark.slow
@pytest.mark.parametrize("spec", sorted(CASES))
def test_paper_table_spec_runs_at_tiny_scale_and_reports_side_by_side(spec, tmp_path, capsys):
    table_id, extra, filled = CASES[spec]
    args = ["sweep", f"slurm/sweeps/{spec}.yaml", SCALE, "executor=debug", "seeds=[0]", f"root={tmp_path}",
            "overrides={progress: false}", *extra]
    assert cli.main(args) == 0, capsys.readouterr().err
    sweep = tmp_path / spec
    states = [json.loads(p.read_text())["state"] for p in sweep.rglob("state.json") if p.parent.name == "seed0"]
    assert states and set(states) == {"done"}
    assert cli.main(["report", str(sweep)]) == 0  # the spec names its paper table: --paper is implied
    table = load_table(table_id)
    cells = {(r["row"], r["column"]): r for r in csv.DictReader((sweep / "report" / f"paper-{table_id}.csv").open())}
    assert len(cells) == len(table.rows) * len(table.columns)
    for (row, column), cell in cells.items():
        paper = table.value(row, column)
        assert (cell["paper"] == "" and paper is None) or float(cell["paper"]) == pytest.approx(paper)
    for row, column in filled:
        assert int(cells[(row, column)]["n"]) == 1 and cells[(row, column)]["ours_mean"] != "", (row, column)
    empty = [c for c in cells.values() if c["n"] == "0"]
    assert all(c["note"] for c in empty)  # every cell without a number says why
    md = (sweep / "report" / f"paper-{table_id}.md").read_text()
    assert "Reduced budget: this table is a smoke run of the pipeline, not a reproduction." in md


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "slurm" / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_sweep_spec_expands_in_full(path, monkeypatch):
    """The full grids (every seed, variant and suite at the papers' budgets) are valid before anything runs."""
    monkeypatch.chdir(path.parents[2])
    spec = launch.load_spec(path)
    elements = launch.expand(spec)
    assert elements and len({e.run_dir for e in elements}) == len(elements)
    if spec.paper:
        table = load_table(spec.paper)
        assert len(spec.seeds) == (table.protocol.seeds or 1)  # the paper's number of runs (1 where not stated)
