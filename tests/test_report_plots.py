"""Plots a reader trusts (tdmt.report.curves_figure), the papers' method names, and the report's ratio table."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from tdmt.report import curves_figure, method_name, plot_curves
from tdmt.tables import IDEAL, ratio_table

TASKS = ["A", "B"]


def _rows(steps, values, stage=None, metric="return"):
    """eval.csv rows: task A gets ``values``, task B ``values`` + 10."""
    rows = []
    for step, v in zip(steps, values):
        row = {"step": str(step), f"eval/A/{metric}": str(v), f"eval/B/{metric}": str(v + 10)}
        if stage:
            row["stage"] = stage(step)
        rows.append(row)
    return rows


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_band_colour_is_its_method_line_colour_whatever_the_seed_counts():
    """Regression: a one-seed method drew no band, so the next band took its colour from the cycle."""
    runs = {"one seed": [_rows([1, 2, 3], [1, 2, 3])],
            "three seeds": [_rows([1, 2, 3], [v + s for v in (4, 5, 6)]) for s in range(3)],
            "two seeds": [_rows([1, 2, 3], [v + s for v in (7, 8, 9)]) for s in range(2)]}
    fig = curves_figure(runs, TASKS)
    ax = fig.axes[0]
    lines = _lines(ax)
    bands = ax.collections
    assert len(bands) == 2  # one per method with several seeds
    for band, label in zip(bands, ["three seeds", "two seeds"]):
        assert to_rgba(band.get_facecolor()[0])[:3] == to_rgba(lines[label].get_color())[:3]
    assert len({lines[k].get_color() for k in runs}) == 3
    # the mean and std across seeds: seeds s=0,1,2 add 0,1,2 -> mean +1, std sqrt(2/3)
    np.testing.assert_allclose(lines["three seeds"].get_ydata(), [5, 6, 7])
    plt.close(fig)


def test_single_evaluation_gets_a_marker_and_success_a_fixed_unit_axis():
    runs = {"curve": [_rows([1, 2, 3], [0.1, 0.2, 0.3], metric="success")],
            "one point": [_rows([3], [0.25], metric="success")]}
    fig = curves_figure(runs, TASKS, metric="success")
    for ax in fig.axes[:3]:
        lines = _lines(ax)
        assert lines["one point"].get_marker() == "o" and lines["curve"].get_marker() in ("None", None, "")
        assert ax.get_ylim() == pytest.approx((-0.03, 1.03))
        assert ax.get_ylabel() == "success rate"
    plt.close(fig)


def test_mean_panel_offline_boundary_and_teacher_level():
    """KTM-DRL: 4 offline updates then online steps: online env steps start at 0, offline updates left of it."""
    ktm = _rows([2, 4, 5, 6], [1.0, 2.0, 3.0, 4.0], stage=lambda s: "offline" if s <= 4 else "online")
    fig = curves_figure({"KTM-DRL": [ktm], "TD3-MT": [_rows([1, 2], [0.0, 1.0])]}, TASKS,
                        references={"Ideal (teachers)": [5.0, 20.0]})
    assert [ax.get_title() for ax in fig.axes] == ["A", "B", "mean over tasks"]
    a, b, mean = fig.axes
    np.testing.assert_allclose(_lines(a)["KTM-DRL"].get_xdata(), [-2, 0, 1, 2])
    np.testing.assert_allclose(_lines(a)["TD3-MT"].get_xdata(), [1, 2])
    np.testing.assert_allclose(_lines(mean)["KTM-DRL"].get_ydata(), [6, 7, 8, 9])  # (A + A + 10) / 2
    assert a.get_xlabel() == "env steps per task (offline updates < 0)"
    boundary = [line for line in a.get_lines() if list(line.get_xdata()) == [0, 0]]
    assert len(boundary) == 1  # the offline -> online boundary
    assert [t.get_text() for t in a.texts] == ["offline → online"]
    assert _lines(a)["Ideal (teachers)"].get_ydata()[0] == 5.0 and _lines(b)["Ideal (teachers)"].get_ydata()[0] == 20
    assert _lines(mean)["Ideal (teachers)"].get_ydata()[0] == 12.5
    plt.close(fig)


def test_png_written_and_legend_lists_every_method(tmp_path):
    runs = {"MTSAC": [_rows([1, 2], [1, 2])], "MHSAC": [_rows([1, 2], [2, 3])]}
    path = plot_curves(runs, TASKS, tmp_path / "c.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    fig = curves_figure(runs, TASKS)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["MTSAC", "MHSAC"]
    plt.close(fig)


@pytest.mark.parametrize("recipe,config,name", [
    ("train_teachers", {}, "Ideal"),
    ("ktm_drl", {}, "KTM-DRL"),
    ("ktm_drl", {"offline_steps": 0}, "KTM-DRL w/o Offline"),
    ("ktm_drl", {"online_steps": 0, "alpha": 0}, "KTM-DRL w/o Online"),
    ("ktm_drl", {"alpha": 0}, "KTM-DRL Online w/o Teachers"),
    ("ktm_drl", {"beta": 0}, "KTM-DRL Online only Teacher"),
    ("ktm_drl", {"per_task_replay": False}, "KTM-DRL w/o HER"),
    ("td3_mt", {}, "TD3-MT"),
    ("td3_mt", {"pcgrad": True}, "G-Surgery"),
    ("sac_mt", {"backbone": "paco"}, "PaCo"),
    ("ctpg", {"backbone": "mhsac"}, "MHSAC w/ CTPG"),
    ("ctpg", {"backbone": "sm", "guide": "qmp"}, "SM w/ QMP"),
    ("ctpg", {"guide": "none"}, "MTSAC"),
    ("ctpg", {"hindsight": False}, "MTSAC w/ CTPG w/o hindsight"),
    ("a2c_multitask", {"architecture": "independent"}, "Scratch"),
    ("distill_kl", {}, "Distillation Multi-task"),
    ("tests.toy_recipe", {}, "tests.toy_recipe"),
])
def test_method_names_are_the_papers(recipe, config, name):
    assert method_name(recipe, config) == name


def test_ratio_to_teachers_is_nan_where_the_teacher_return_is_not_positive():
    """A ratio of two negative returns inverts (-140 / -100 = 1.4 would read as better): nan, as in results.md."""
    def run(a, b):
        return [{"step": "1", "eval/A/return": str(a), "eval/B/return": str(b)}]

    table = ratio_table({IDEAL: [run(200.0, -100.0)], "TD3-MT": [run(100.0, -140.0), run(300.0, -50.0)]}, TASKS)
    assert table.records == [["TD3-MT", pytest.approx(1.0), pytest.approx(np.nan, nan_ok=True), pytest.approx(1.0)]]
    assert table.cells == [["TD3-MT", "1.00 ± 0.50", "n/a", "1.00"]]  # mean ± std of 0.5 and 1.5; B: no ratio
