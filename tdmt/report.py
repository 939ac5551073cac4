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
CTPG_GUIDE_NAMES = {"none": "", "qmp": " w/ QMP", "ctpg": " w/ CTPG"}


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
        return " ".join(["KTM-DRL", *parts])
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


def plot_curves(runs: dict[str, Sequence[list[dict]]], task_names: Sequence[str], out: str | os.PathLike,
                metric: str = "return", prefix: str = "eval", title: str | None = None) -> Path:
    """One subplot per task; ``runs`` maps a label (method) to a list of runs (seeds), each a list of eval rows."""
    n = len(task_names)
    cols = min(4, n)
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3 * rows_n), squeeze=False)
    for k, task in enumerate(task_names):
        ax = axes[k // cols][k % cols]
        for label, seeds in runs.items():
            curves = [_series(r, f"{prefix}/{task}/{metric}") for r in seeds]
            curves = [c for c in curves if len(c[0])]
            if not curves:
                continue
            length = min(len(c[0]) for c in curves)
            steps = curves[0][0][:length]
            values = np.stack([c[1][:length] for c in curves])
            mean, std = values.mean(0), values.std(0)
            ax.plot(steps, mean, label=label)
            if len(curves) > 1:
                ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("environment steps", fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
    for k in range(n, rows_n * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    out = Path(out)
    tmp = out.with_name(".tmp-" + out.name)
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, out)
    return out


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
