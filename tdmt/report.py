"""Run reports: per-task learning curves (PNG) and Markdown tables.

Curves read ``eval.csv`` rows (columns ``step`` and ``<prefix>/<task>/<metric>``). Several runs under one label
(seeds) are drawn as their mean with a shaded band of ± one standard deviation (KTM-DRL Figures 2–3).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# The papers' method names (KTM-DRL Tables 1–3, CTPG Table 1, Arora et al. Tables 1–2): results.md tables and the
# report's legends use these, one mapping for every recipe.
RECIPE_NAMES = {"train_teachers": "Ideal", "ktm_drl": "KTM-DRL", "td3_mt": "TD3-MT", "distill_kl": "Distillation "
                "Multi-task", "finetune": "Fine-tuning"}
SAC_BACKBONE_NAMES = {"mtsac": "MTSAC", "mhsac": "MHSAC", "pcgrad": "PCGrad", "sm": "SM", "paco": "PaCo"}
CTPG_GUIDE_NAMES = {"none": "", "qmp": " w/ QMP", "ctpg": " w/ CTPG", "random": " w/ random guide"}


def method_name(recipe: str, cfg: Any) -> str:
    """The paper's name of the method a run of ``recipe`` with config ``cfg`` (a dataclass or a mapping) trains,
    with the ablation it is (KTM-DRL Table 3: "KTM-DRL w/o Offline", ...); a recipe of one's own keeps its name."""
    def get(key: str, default: Any = None) -> Any:
        return cfg.get(key, default) if isinstance(cfg, Mapping) else getattr(cfg, key, default)

    if recipe == "ktm_drl":
        parts = [text for off, text in ((get("offline_steps", 1) == 0, "w/o Offline"),
                                        (get("online_steps", 1) == 0, "w/o Online"),
                                        (get("online_steps", 1) and get("alpha", 1) == 0, "Online w/o Teachers"),
                                        (get("online_steps", 1) and get("beta", 1) == 0, "Online only Teacher"),
                                        (get("per_task_replay", True) is False, "w/o HER")) if off]
        return "KTM-DRL" + (" " + ", ".join(parts) if parts else "")
    if recipe == "td3_mt":
        return "G-Surgery" if get("pcgrad", False) else "TD3-MT"
    if recipe in ("sac_mt", "ctpg"):
        name = SAC_BACKBONE_NAMES.get(get("backbone", "mtsac"), str(get("backbone")))
        if recipe == "sac_mt":
            return name
        name += CTPG_GUIDE_NAMES.get(get("guide", "ctpg"), f" w/ {get('guide')}")
        if get("guide", "ctpg") == "ctpg":
            name += "".join(text for key, text in (("policy_filter", " w/o policy filter"),
                                                   ("hindsight", " w/o hindsight")) if get(key, True) is False)
            if get("guide_block", "temperature") == "none":
                name += " w/o guide block"
        return name
    if recipe == "a2c_multitask":
        return "Vanilla Multi-task" if get("architecture", "multihead") == "multihead" else "Scratch"
    return RECIPE_NAMES.get(recipe, recipe)


def _series(rows: list[dict], column: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(float(r["step"]), float(r[column])) for r in rows if r.get(column) not in (None, "")]
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pts)
    return np.asarray(steps), np.asarray(values)


def offline_updates(rows: list[dict]) -> int:
    """The number of offline updates before a run's first env step: KTM-DRL's eval rows have ``stage`` offline
    (its step counts updates) then online (its step counts updates + env steps per task); 0 for other runs."""
    return max((int(float(r["step"])) for r in rows if r.get("stage") == "offline"), default=0)


def _env_steps(rows: list[dict]) -> list[dict]:
    """Rows with ``step`` as env steps per task: a KTM-DRL run's offline updates become negative, its online
    steps count from 0 (the offline→online boundary)."""
    offset = offline_updates(rows)
    return [{**r, "step": float(r["step"]) - offset} for r in rows] if offset else rows


def _with_task_mean(rows: list[dict], task_names: Sequence[str], column: str, prefix: str, metric: str
                    ) -> list[dict]:
    """Rows with ``column`` = the mean over tasks of ``<prefix>/<task>/<metric>`` (rows missing a task skipped)."""
    out = []
    for r in rows:
        values = [r.get(f"{prefix}/{t}/{metric}") for t in task_names]
        if all(v not in (None, "") for v in values):
            out.append({**r, column: sum(float(v) for v in values) / len(values)})
    return out


def plot_curves(runs: dict[str, Sequence[list[dict]]], task_names: Sequence[str], out: str | os.PathLike,
                metric: str = "return", prefix: str = "eval", title: str | None = None,
                references: dict[str, Sequence[float]] | None = None) -> Path:
    """Write :func:`curves_figure` as a PNG (atomically); returns its path."""
    fig = curves_figure(runs, task_names, metric, prefix, title, references)
    out = Path(out)
    tmp = out.with_name(".tmp-" + out.name)
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, out)
    return out


def curves_figure(runs: dict[str, Sequence[list[dict]]], task_names: Sequence[str], metric: str = "return",
                  prefix: str = "eval", title: str | None = None,
                  references: dict[str, Sequence[float]] | None = None) -> plt.Figure:
    """One subplot per task and one for the mean over tasks; ``runs`` maps a label (method) to a list of runs
    (seeds), each a list of eval rows; ``references`` maps a label (e.g. the teachers) to a per-task level drawn
    as a dashed line.

    Each method has one colour (line, band and markers); several seeds draw their mean and a ± std band; a run
    with one evaluation shows a marker. The x axis is env steps per task: KTM-DRL's offline updates sit left of
    0, shaded and labelled, with the offline→online boundary at 0. Success rates use a fixed [0, 1] axis.
    """
    panels = [*task_names, "mean over tasks"]
    n = len(panels)
    cols = min(4, n)
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3 * rows_n), squeeze=False)
    colors = {label: f"C{i % 10}" for i, label in enumerate([*runs, *(references or {})])}
    mean_column = "__mean_over_tasks__"
    runs = {label: [_env_steps(r) for r in seeds] for label, seeds in runs.items()}
    offline = any(float(r["step"]) < 0 for seeds in runs.values() for rows in seeds for r in rows)
    for k, panel in enumerate(panels):
        ax = axes[k // cols][k % cols]
        mean_panel = k == len(task_names)
        for label, seeds in runs.items():
            if mean_panel:
                curves = [_series(_with_task_mean(r, task_names, mean_column, prefix, metric), mean_column)
                          for r in seeds]
            else:
                curves = [_series(r, f"{prefix}/{panel}/{metric}") for r in seeds]
            curves = [c for c in curves if len(c[0])]
            if not curves:
                continue
            length = min(len(c[0]) for c in curves)
            steps = curves[0][0][:length]
            values = np.stack([c[1][:length] for c in curves])
            mean, std = values.mean(0), values.std(0)
            ax.plot(steps, mean, color=colors[label], label=label, marker="o" if length == 1 else None)
            if len(curves) > 1:
                ax.fill_between(steps, mean - std, mean + std, color=colors[label], alpha=0.2, linewidth=0)
        for label, levels in (references or {}).items():
            level = float(np.mean(levels)) if mean_panel else float(levels[k])
            if np.isfinite(level):
                ax.axhline(level, color=colors[label], linestyle="--", linewidth=1.2, label=label)
        if offline:
            left = ax.get_xlim()[0]
            ax.axvspan(left, 0, color="0.85", alpha=0.5, linewidth=0)
            ax.set_xlim(left=left)
            ax.axvline(0, color="0.3", linestyle=":", linewidth=1)
            ax.text(0, 0.5, "offline → online", transform=ax.get_xaxis_transform(), rotation=90, ha="right",
                    va="center", fontsize=7, color="0.3")
        if metric == "success":
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(panel, fontsize=9, fontweight="bold" if mean_panel else "normal")
        ax.set_xlabel("env steps per task" + (" (offline updates < 0)" if offline else ""), fontsize=8)
        ax.set_ylabel(f"{metric} rate" if metric == "success" else metric, fontsize=8)
        ax.grid(alpha=0.3)
    for k in range(n, rows_n * cols):
        axes[k // cols][k % cols].axis("off")
    legend = {}  # one entry per label, from whichever panel drew it
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    handles, labels = list(legend.values()), list(legend)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    if title:
        fig.suptitle(title)
    legend_in = 0.2 * ((len(handles) + 3) // 4) + 0.1 if handles else 0  # inches below the panels for the legend
    fig.tight_layout(rect=(0, legend_in / fig.get_figheight(), 1, 1))
    return fig


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; floats are printed with 1 decimal (or 2 when below 10 in magnitude)."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a report file atomically."""
    path = Path(path)
    tmp = path.with_name(".tmp-" + path.name)
    tmp.write_text(text)
    os.replace(tmp, path)
