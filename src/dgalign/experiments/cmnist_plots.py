"""PNG plots of a Colored MNIST reproduction (matplotlib, Agg backend): Figs 3, 4, 5.

Dynamics (Figs 3, 4): the exact head-Hessian distance ||H_0 - H_1||_F between the two training
envs (log scale), test accuracy and test loss per step; thin lines are restarts, thick lines
their mean; the dashed line marks the penalty switch. FGSM (Fig 5): test accuracy vs eps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dgalign.errors import ConfigError
from dgalign.utils.plotting import pyplot, save_png
from dgalign.utils.text import slug


def _series(recs: list[dict]) -> dict[str, np.ndarray | list]:
    return {
        "hd_step": recs[0]["dynamics"]["step"],
        "hd": np.array([r["dynamics"]["hessian_distance"] for r in recs]),
        "acc": np.array([r["dynamics"]["test_acc"] for r in recs]) * 100,
        "loss": np.array([r["dynamics"]["test_loss"] for r in recs]),
    }


def _style(name: str) -> str:
    """Dashed lines for the ablation rows (names with parentheses)."""
    return "--" if "(" in name else "-"


def _panels(axes, name: str, recs: list[dict], color, anneal: int, thin: bool = True) -> None:
    s = _series(recs)
    steps = s["hd_step"]
    for ax, x, y, label in (
        (axes[0], s["hd_step"], s["hd"], "||H_0 - H_1||_F"),
        (axes[1], steps, s["acc"], "test accuracy (%)"),
        (axes[2], steps, s["loss"], "test loss"),
    ):
        if thin and len(y) > 1:
            for row in y:
                ax.plot(x, row, color=color, lw=0.5, alpha=0.35)
        ax.plot(x, y.mean(0), color=color, lw=1.6, ls=_style(name), label=name)
        ax.axvline(anneal, color="gray", ls="--", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
    axes[0].set_yscale("log")


def write_plots(root: Path, records: dict[str, list[dict]], fgsm: dict, head: str, anneal: int):
    """Per-method dynamics, all methods' dynamics, FGSM curves; returns the file names."""
    plt = pyplot()
    colors = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors
    names = []
    for i, (name, recs) in enumerate(records.items()):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
        _panels(axes, name, recs, colors[i % len(colors)], anneal)
        fig.suptitle(f"{head}: {name} ({len(recs)} restarts)", fontsize=10)
        file = f"dynamics_{slug(name)}.png"
        save_png(fig, root / file)
        plt.close(fig)
        names.append(file)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for i, (name, recs) in enumerate(records.items()):
        _panels(axes, name, recs, colors[i % len(colors)], anneal, thin=False)
    fig.suptitle(f"{head}: dynamics (mean over restarts)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.87, 1))
    fig.legend(
        *axes[1].get_legend_handles_labels(),
        loc="center left",
        bbox_to_anchor=(0.87, 0.5),
        fontsize=8,
    )
    save_png(fig, root / "dynamics.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, res) in enumerate(fgsm.items()):
        eps = [float(e) for e in res]
        acc = np.array([res[e] for e in res]) * 100
        ax.errorbar(
            eps,
            acc.mean(1),
            yerr=acc.std(1),
            label=name,
            color=colors[i % len(colors)],
            marker="o",
            ms=3,
            capsize=2,
        )
    ax.set_xlabel("FGSM epsilon")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(head.replace(" — ", "\n") + "\nFGSM on the test environment", fontsize=9)
    save_png(fig, root / "fgsm.png")
    plt.close(fig)
    return ["dynamics.png", *names, "fgsm.png"]


def _load(root: Path) -> tuple[dict[str, list[dict]], dict]:
    config = json.loads((root / "config.json").read_text())
    out: dict[str, list[dict]] = {}
    for path in sorted(root.glob("*/restart*.json")):
        rec = json.loads(path.read_text())
        out.setdefault(rec["method"], []).append(rec)
    return out, config


def fig4(balanced: Path, labelshift: Path, out: Path, methods: list[str] | None = None) -> None:
    """Hessian distance per step, balanced (solid) vs label shift (dashed), of `methods`
    (default: HGP and Hutchinson, as the paper's Fig 4) present in both dirs."""
    plt = pyplot()
    bal, cfg_b = _load(balanced)
    shf, cfg_s = _load(labelshift)
    quick = cfg_b.get("quick") or cfg_s.get("quick")
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.get_cmap("tab10").colors
    names = [n for n in (methods or ["HGP", "Hutchinson"]) if n in bal and n in shf]
    if not names:
        raise ConfigError(f"no method of {methods or ['HGP', 'Hutchinson']} is in both runs")
    for i, name in enumerate(names):
        for recs, ls, tag in ((bal[name], "-", "no shift"), (shf[name], "--", "label shift")):
            s = _series(recs)
            ax.plot(
                s["hd_step"], s["hd"].mean(0), ls=ls, color=colors[i % 10], label=f"{name}, {tag}"
            )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||H_0 - H_1||_F")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(("QUICK — " if quick else "") + "Hessian distance, no shift vs label shift")
    save_png(fig, out)
    plt.close(fig)
