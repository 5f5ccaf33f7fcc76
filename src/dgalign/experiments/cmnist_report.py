"""Tables and plots of a `dgalign reproduce cmnist` run directory (see `cmnist_run`).

report.md holds: accuracies at the final step (train = mean of the two training envs, test,
gray test; mean +- population std over restarts, in %) beside the paper's numbers with the
test gap in units of the paper's std; wall time per training step as a ratio to ERM (same run
directory, same batch of restarts); FGSM accuracy on the test env per eps. PNGs: per-method
dynamics (exact head-Hessian distance between the training envs, test accuracy, test loss per
step), all methods' dynamics together, and the FGSM curves. Everything of a QUICK run says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dgalign.experiments import cmnist_model as M
from dgalign.experiments import cmnist_plots as plots
from dgalign.experiments.cmnist_data import binary_label, generate_restarts
from dgalign.experiments.cmnist_layout import restart_files, restart_paths
from dgalign.experiments.cmnist_model import bce, sign_accuracy
from dgalign.experiments.cmnist_reference import GRAY, PAPER, TIME_100_STEPS
from dgalign.experiments.cmnist_train import stack_env
from dgalign.experiments.fgsm import fgsm_accuracy
from dgalign.utils.io import atomic_write_json, atomic_write_text

QUICK_NOTE = "QUICK (restart 0 of the full protocol, core rows; the paper: 10 restarts)"


def load_records(root: Path, methods: list[str], restarts: int) -> dict[str, list[dict]]:
    """{method: records of its saved restarts 0..restarts-1} (methods with none left out)."""
    out = {}
    for name in methods:
        recs = [json.loads(p.read_text()) for p in restart_files(root, name)]
        recs = [r for r in recs if r["restart"] < restarts]
        if recs:
            out[name] = recs
    return out


def _stat(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values) * 100), float(np.std(values) * 100)


def _pm(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}"


def title(config) -> str:
    """The report's title line (says QUICK for the QUICK variant)."""
    variant = "label shift (imbalanced)" if config.data.label_shift else "balanced"
    shift = getattr(config, "variant", "paper")
    if shift != "paper":
        variant += f", variant {shift}"
    head = f"Colored MNIST ({variant}), IRM protocol"
    if getattr(config, "reduced", False):
        head = (
            f"REDUCED (hidden {config.protocol.hidden}, pool {config.data.pool}, "
            f"{config.protocol.steps} steps) — {head}"
        )
    return f"{QUICK_NOTE} — {head}" if config.quick else head


def accuracy_table(
    records: dict[str, list[dict]], variant: str, reduced: bool = False
) -> tuple[str, dict]:
    """Markdown table of final accuracies beside the paper; also the numbers as a dict. The
    gap is in units of the paper's std over its 10 restarts (a QUICK run has one restart)."""
    lines = [
        "| method | restarts | train | test | gray test | paper train | paper test "
        "| (test - paper) / paper std |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for name, recs in records.items():
        tr = _stat([r["final"]["train_acc"] for r in recs])
        te = _stat([r["final"]["test_acc"] for r in recs])
        gr = _stat([r["final"]["gray_acc"] for r in recs])
        paper = PAPER[variant].get(name)
        gap = (te[0] - paper[2]) / paper[3] if paper and not reduced else None
        p_tr = _pm(paper[0], paper[1]) if paper else "-"
        p_te = _pm(paper[2], paper[3]) if paper else "-"
        if variant == "balanced" and name in GRAY:
            p_te += f" (gray {GRAY[name]:.1f})"
        flag = "n/a (reduced protocol or variant)" if reduced else ""
        if gap is not None:
            flag = f"{gap:+.1f}" + (" **>2**" if abs(gap) > 2 else "")
        lines.append(
            f"| {name} | {len(recs)} | {_pm(*tr)} | {_pm(*te)} | {_pm(*gr)} | {p_tr} | {p_te} "
            f"| {flag} |"
        )
        summary[name] = {"restarts": len(recs), "train": tr, "test": te, "gray": gr, "gap": gap}
    return "\n".join(lines), summary


def _mean_pm(recs: list[dict], key: str) -> str:
    """mean +- std of a final accuracy over restarts (%), the mean alone for one restart."""
    mean, std = _stat([r["final"][key] for r in recs])
    return _pm(mean, std) if len(recs) > 1 else f"{mean:.1f}"


def combined_table(balanced: Path, labelshift: Path, methods: list[str]) -> str:
    """One markdown table of two run dirs (balanced and label shift) beside the paper: per
    method the restarts used and train / test accuracy (mean +- population std, %) of each
    variant. Methods absent from a dir get "-". A QUICK dir is named in the header."""

    def side(root: Path) -> tuple[dict[str, list[dict]], bool]:
        quick = json.loads((root / "config.json").read_text()).get("quick", False)
        return load_records(root, methods, 10**9), quick

    (bal, q_bal), (shf, q_shf) = side(balanced), side(labelshift)
    tag = {False: "", True: " (QUICK)"}
    lines = [
        f"| method | balanced{tag[q_bal]}: restarts | train | test | paper train | paper test "
        f"| label shift{tag[q_shf]}: restarts | train | test | paper train | paper test |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        if name not in bal and name not in shf:
            continue
        cells = [name]
        for recs, variant in ((bal.get(name), "balanced"), (shf.get(name), "labelshift")):
            paper = PAPER[variant].get(name)
            cells += (
                [str(len(recs))] + [_mean_pm(recs, k) for k in ("train_acc", "test_acc")]
                if recs
                else ["0", "-", "-"]
            )
            cells += [_pm(paper[0], paper[1]), _pm(paper[2], paper[3])] if paper else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(records: dict[str, list[dict]]) -> tuple[str, dict]:
    """Median wall time per training step (whole batch of restarts) and ratio to ERM."""
    times = {n: float(np.median([r["step_time"] for r in recs])) for n, recs in records.items()}
    batch = {n: recs[0].get("batch_restarts", 1) for n, recs in records.items()}
    base = times.get("ERM")
    lines = [
        "| method | restarts per batch | s / step | ratio to ERM | paper ratio (Table 5) |",
        "|---|---|---|---|---|",
    ]
    ratios = {}
    for name, t in times.items():
        ratio = t / base if base else None
        ratios[name] = ratio
        paper = TIME_100_STEPS.get(name)
        pr = f"{paper / TIME_100_STEPS['ERM']:.2f}" if paper else "-"
        rs = f"{ratio:.2f}" if ratio is not None else "- (no ERM)"
        lines.append(f"| {name} | {batch[name]} | {t:.3f} | {rs} | {pr} |")
    return "\n".join(lines), {"seconds": times, "ratio": ratios}


def fgsm_results(root: Path, config, records: dict[str, list[dict]], data) -> dict[str, dict]:
    """{method: {eps: [acc per restart]}} on each restart's test env (`data[k]`)."""
    out = {}
    for name, recs in records.items():
        ks = [r["restart"] for r in recs]
        states = [
            torch.load(restart_paths(root, name, k)[1], weights_only=True)["state"] for k in ks
        ]
        params = {k: v.detach() for k, v in M.stack_restarts(states, torch.float32, "cpu").items()}
        x, y = stack_env([data[k] for k in ks], "test", torch.float32, "cpu")
        accs = fgsm_accuracy(
            lambda inp, p=params: M.head(p, M.features(p, inp)),
            lambda lg, t: bce(lg, t).sum(),
            sign_accuracy,
            x,
            y,
            config.fgsm_eps,
        )
        out[name] = {str(e): [float(a) for a in acc] for e, acc in accs.items()}
    return out


def composition(data, task: str = "low-high") -> str:
    """Restart 0's training envs: sizes and share of the task's class 1 before label noise
    (digit<5 for the paper's task, odd digits for `parity`)."""
    label = {"low-high": "digit<5", "parity": "odd digits"}.get(task, "class 1")
    parts = []
    for name in ("env0", "env1"):
        env = data[name]
        share = float(binary_label(env.digits, task).float().mean()) * 100
        parts.append(f"{name}: {len(env)} images, {share:.1f}% {label}")
    return "Training environments (restart 0): " + "; ".join(parts) + "."


def fgsm_table(results: dict[str, dict]) -> str:
    """Markdown: test accuracy (%) under FGSM per eps, mean ± std over restarts."""
    eps = list(next(iter(results.values())).keys()) if results else []
    lines = ["| method | " + " | ".join(f"eps={e}" for e in eps) + " |"]
    lines.append("|---|" + "---|" * len(eps))
    for name, res in results.items():
        lines.append(f"| {name} | " + " | ".join(_pm(*_stat(res[e])) for e in eps) + " |")
    return "\n".join(lines)


def write_report(root: Path, config) -> Path:
    """Write report.md, summary.json and the PNGs of the run dir `root`; returns `root`."""
    root = Path(root)
    records = load_records(root, config.report_methods, config.restarts)
    variant = "labelshift" if config.data.label_shift else "balanced"
    head = title(config)
    parts = [f"# {head}", ""]
    if config.quick:
        parts += [
            f"**{QUICK_NOTE}.** One restart: its numbers scatter around the paper's means by "
            "about the paper's std; `dgalign reproduce cmnist --output-dir` this directory adds "
            "the other restarts and rows.",
            "",
        ]
    if not records:
        parts.append("No finished restarts yet.")
        atomic_write_text(root / "report.md", "\n".join(parts) + "\n")
        return root
    reduced = getattr(config, "reduced", False) or getattr(config, "variant", "paper") != "paper"
    acc, acc_summary = accuracy_table(records, variant, reduced)
    cost, cost_summary = cost_table(records)
    count = max(r["restart"] for recs in records.values() for r in recs) + 1
    data, _ = generate_restarts(
        config.seed, config.data, config.protocol.hidden, config.data_dir, count
    )
    fgsm = fgsm_results(root, config, records, data)
    p = config.protocol
    parts += [
        f"Settings: seed {config.seed}, {p.steps} steps, penalty weight {p.penalty_weight:g} from "
        f"step {p.anneal_iters}, training pool {config.data.pool}, label shift "
        f"{config.data.label_shift} (majority {config.data.majority}, split "
        f"'{config.data.split}'), mean term '{config.mean}', device {config.device}, "
        f"{config.dtype}.",
        "",
        composition(data[0], config.data.task),
        "",
        "## Accuracy at the final step (%)",
        "",
        acc,
        "",
        "## Wall time per training step",
        "",
        cost,
        "",
        "Each method's time comes from its own batch of restarts, so the ratios are only as "
        "comparable as the machine's load was while they ran; `python benchmarks/cmnist_step.py "
        "--methods` times all methods round-robin in one process.",
        "",
        "## FGSM accuracy on the test environment (%)",
        "",
        fgsm_table(fgsm),
        "",
    ]
    images = plots.write_plots(root, records, fgsm, head, p.anneal_iters)
    parts += ["## Plots", ""] + [f"![{img}]({img})" for img in images]
    atomic_write_text(root / "report.md", "\n".join(parts) + "\n")
    atomic_write_json(
        root / "summary.json",
        {"title": head, "accuracy": acc_summary, "cost": cost_summary, "fgsm": fgsm},
    )
    return root


def plot_fig4(balanced: Path, labelshift: Path, out: Path, methods: list[str] | None = None):
    """Fig 4: the training envs' Hessian distance per step, balanced vs label shift."""
    plots.fig4(balanced, labelshift, out, methods)
