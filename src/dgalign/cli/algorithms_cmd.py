"""`dgalign algorithms`: list the registered algorithms, optionally with their
hyper-parameter spaces as a markdown table."""

from __future__ import annotations

import argparse

from dgalign import algorithms
from dgalign.hparams import base_hparam_space


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("algorithms", help="list the registered algorithms")
    parser.add_argument(
        "--hparams",
        action="store_true",
        help="print each algorithm's hyper-parameters (default, random range)",
    )
    parser.add_argument(
        "--dataset", default="ColoredMNIST", help="dataset whose hyper-parameter ranges to show"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.hparams:
        width = max(map(len, algorithms.names()))
        for name in algorithms.names():
            cls = algorithms.get(name)
            print(f"{name:<{width}}  {cls.DESCRIPTION} ({cls.PAPER})")
        return 0
    from dgalign.data import get_dataset_class

    get_dataset_class(args.dataset)  # ConfigError (one line) for an unknown name
    print(hparams_table(args.dataset))
    return 0


def hparams_table(dataset: str) -> str:
    """Markdown table of every algorithm's own hyper-parameters on `dataset`, then the ones
    every algorithm shares (an algorithm's own entry of the same name overrides a shared one)."""
    lines = [
        f"Hyper-parameters on {dataset} (default; random-search rule; values allowed)",
        "",
        "| algorithm | name | default | random | allowed | meaning |",
        "|---|---|---|---|---|---|",
    ]
    rows = [
        (name, h) for name in algorithms.names() for h in algorithms.get(name).hparam_space(dataset)
    ]
    rows += [("(all)", h) for h in base_hparam_space(dataset)]
    for name, h in rows:
        lines.append(
            f"| {name} | {h.name} | {h.default} | {h.sampler.description} | "
            f"{h.allowed.description} | {h.help} |"
        )
    return "\n".join(lines)
