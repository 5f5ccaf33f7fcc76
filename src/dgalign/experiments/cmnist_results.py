"""Compact per-restart results of `dgalign reproduce cmnist` run dirs and one table across runs.

`compact(root)` keeps, per method and restart, the final train / test / gray accuracies and
the selection (rule, chosen weight, validation accuracies) of a `--select` row, with the run's
identity (protocol, data, seed): small JSON files for docs/results/. `variants_table(files)`
renders several of them side by side (test accuracy, mean +- population std over restarts).

    python -m dgalign.experiments.cmnist_results compact RUN_DIR OUT.json
    python -m dgalign.experiments.cmnist_results table A.json B.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dgalign.experiments.cmnist_layout import restart_files
from dgalign.utils.io import atomic_write_json

KEYS = ("train_acc", "test_acc", "gray_acc")


def compact(root: Path, variant: str = "") -> dict:
    """{"identity", "variant", "methods": {name: [per-restart dict]}} of the run dir `root`:
    every method directory with restart JSONs (the selection candidates are left out)."""
    root = Path(root)
    methods: dict[str, list[dict]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "selection"):
        recs = [json.loads(p.read_text()) for p in restart_files(root, sub.name)]
        if not recs:
            continue
        rows = []
        for r in recs:
            row = {"restart": r["restart"], **{k: r["final"][k] for k in KEYS}}
            if "selection" in r:
                row["selection"] = r["selection"]
            rows.append(row)
        methods[recs[0]["method"]] = rows
    identity = json.loads((root / "config.json").read_text())["identity"]
    return {"identity": identity, "variant": variant, "methods": methods}


def _cell(rows: list[dict], key: str) -> str:
    values = np.array([r[key] for r in rows]) * 100
    return f"{values.mean():.1f} ± {values.std():.1f}"


def variants_table(results: list[dict], methods: list[str] | None = None) -> str:
    """Markdown: per method, train and test accuracy (%) of each compact result (n restarts)."""
    names = methods or list(dict.fromkeys(m for r in results for m in r["methods"]))
    head = (
        "| method | " + " | ".join(f"{r['variant'] or 'run'}: train | test" for r in results) + " |"
    )
    lines = [head, "|---|" + "---|---|" * len(results)]
    for name in names:
        cells = []
        for r in results:
            rows = r["methods"].get(name)
            cells += [_cell(rows, "train_acc"), _cell(rows, "test_acc")] if rows else ["-", "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = sorted({len(rows) for r in results for rows in r["methods"].values()})
    lines.append("")
    lines.append(f"Restarts per cell: {', '.join(map(str, counts))}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dgalign.experiments.cmnist_results")
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compact", help="a run dir -> a compact JSON")
    c.add_argument("root")
    c.add_argument("out")
    c.add_argument("--variant", default="")
    t = sub.add_parser("table", help="compact JSONs -> a markdown table")
    t.add_argument("files", nargs="+")
    t.add_argument("--methods", nargs="+", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "compact":
        atomic_write_json(Path(args.out), compact(Path(args.root), args.variant))
        print(args.out)
    else:
        results = [json.loads(Path(f).read_text()) for f in args.files]
        print(variants_table(results, args.methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
