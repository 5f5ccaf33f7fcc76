"""`dgalign analyze ...`: analyses of saved runs, each a subcommand writing PNGs (and a JSON of
the numbers) into RUN_DIR/analysis/ (or --out) and printing the numbers behind them.

The analyses themselves are library functions of `dgalign.analysis` (`analyze_flatness`,
`analyze_surface`, `analyze_latent`, `analyze_transferability`); this module parses their
options and prints their numbers. To add an analysis, write `_add_<name>(sub)` registering its
subparser and handler (`_common` adds the shared options and sets the handler) and append it to
`ANALYSES`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from dgalign.cli.ranges import integer, nonempty_path, number, seed


def _common(
    parser: argparse.ArgumentParser,
    handler: Callable[[argparse.Namespace], int],
    n_mix_help: str | None = None,
) -> None:
    """Add the options every analysis ends with and set its handler. With `n_mix_help` (the
    analyses of losses on data and FGMix mixes) first --n-mix (default 1000) and --max-samples
    (default 2000), then --out, --data-dir and --seed."""
    if n_mix_help is not None:
        parser.add_argument("--n-mix", type=integer(1), default=1000, help=n_mix_help)
        parser.add_argument(
            "--max-samples",
            type=integer(1),
            default=2000,
            help="samples per environment (first rows of its `in` split; default 2000)",
        )
    parser.add_argument(
        "--out", default=None, type=nonempty_path, help="output folder (default: RUN_DIR/analysis)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        type=nonempty_path,
        help="data directory (default: the run's, else $DGALIGN_DATA)",
    )
    parser.add_argument("--seed", type=seed(), default=0, help="seed of directions and mixes")
    parser.set_defaults(handler=handler)


def _shared(args: argparse.Namespace) -> dict:
    """The values of the options `_common` added, by the analyses' keyword names."""
    names = ("n_mix", "max_samples", "out", "data_dir", "seed")
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


# -- flatness ---------------------------------------------------------------------------------


def _add_flatness(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flatness",
        help="loss increase vs radius along random weight directions (FGMix Fig. 5)",
        description="Local flatness L(theta + r d) - L(theta) of each run's final weights on "
        "its training environments. RUN may end in :swa for the weight average.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories / model files")
    p.add_argument(
        "--radii", type=number(0.0), nargs="+", default=None, help="radii (default: 0..)"
    )
    p.add_argument(
        "--n-directions", type=integer(1), default=20, help="random directions (paper 50)"
    )
    p.add_argument(
        "--directions",
        choices=("unit", "filter"),
        default="unit",
        help="plain unit directions (default) or filter-normalised ones",
    )
    p.add_argument(
        "--data",
        choices=("auto", "original", "mixed"),
        default="auto",
        help="loss on original data, or original + the run's FGMix mixes "
        "(auto: mixed for FGMix runs, as the paper)",
    )
    _common(p, _run_flatness, "mixes for --data mixed (trained policy, also for RUN:swa)")


def _run_flatness(args: argparse.Namespace) -> int:
    from dgalign.analysis.flatness import analyze_flatness, format_table

    done = analyze_flatness(
        args.runs, args.radii, args.n_directions, args.directions, args.data, **_shared(args)
    )
    print(f"Local flatness ({done.note}), mean +- std over {args.n_directions} directions:")
    print(format_table(done.results))
    print(f"wrote {done.png}")
    return 0


# -- surface ----------------------------------------------------------------------------------


def _add_surface(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "surface",
        help="2-D loss / accuracy surface through three weight vectors (FGMix Fig. 6)",
        description="Loss and test-accuracy surface on the plane through W0, W1, W2. Each W is "
        "a run directory, model file or checkpoint; append :swa for the weight average, prefix "
        "init: for the run's initialisation (e.g. init:runs/erm runs/erm:swa runs/fgmix:swa).",
    )
    p.add_argument("weights", nargs=3, metavar="W", help="three weight sources")
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="DIR[:swa]",
        help="folder of checkpoint copies taken during a run: its optimisation "
        "path (repeatable; :swa for the path of the average)",
    )
    p.add_argument("--grid", type=integer(2), default=11, help="grid points per axis")
    p.add_argument("--margin", type=number(0.0), default=0.2, help="grid margin (fraction of span)")
    _common(p, _run_surface, "mixes of the loss with mixes (policy of the first FGMix W)")


def _run_surface(args: argparse.Namespace) -> int:
    from dgalign.analysis.surface import analyze_surface, format_points

    done = analyze_surface(args.weights, args.path, args.grid, args.margin, **_shared(args))
    print(f"Plane through {', '.join(done.labels)}; grid {args.grid}x{args.grid}:")
    print(format_points(done.surface, done.at_points))
    for name, best, value, u, v in done.surface.extremes():
        print(f"{name}: {best} {value:.4f} at (u, v) = ({u:.3f}, {v:.3f})")
    print(f"wrote {done.png}")
    return 0


# -- latent -----------------------------------------------------------------------------------


def _add_latent(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latent",
        help="2-D embedding of latent codes by domain / class, and FGMix mixes (Figs. 4, 9)",
        description="Embed the featurizer's codes of every environment (t-SNE with "
        "scikit-learn, else PCA); for FGMix runs also the mixes of its trained policy.",
    )
    p.add_argument("run", metavar="RUN", help="run directory or model file (:swa for the average)")
    p.add_argument("--per-env", type=integer(2), default=300, help="codes per environment")
    p.add_argument("--n-mix", type=integer(1), default=300, help="mixes to generate (FGMix runs)")
    p.add_argument(
        "--embedding",
        choices=("auto", "tsne", "pca"),
        default="auto",
        help="auto: t-SNE when scikit-learn is installed, else PCA",
    )
    _common(p, _run_latent)


def _run_latent(args: argparse.Namespace) -> int:
    from dgalign.analysis.latent import analyze_latent

    done = analyze_latent(args.run, args.per_env, embedding=args.embedding, **_shared(args))
    if done.embedding != "t-SNE":
        print("note: scikit-learn is not installed, so the embedding is PCA, not t-SNE")
    print(f"Latent codes of {done.label} ({done.codes} codes, {done.embedding}):")
    for key, value in done.numbers.items():
        print(f"  {key}: {value if isinstance(value, str) else f'{value:.4f}'}")
    print(f"wrote {done.png}")
    return 0


# -- transferability -------------------------------------------------------------------------


def _add_transferability(sub: argparse._SubParsersAction) -> None:
    from dgalign.analysis import transferability

    p = sub.add_parser(
        "transferability",
        help="target accuracy under the worst-case head attack vs delta (Hessian paper Fig 2)",
        description=transferability.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run dir (model.pt) or reproduction dir")
    p.add_argument(
        "--deltas",
        type=number(0.0),
        nargs="+",
        default=[0.0, 0.1, 0.2, 0.5, 1.0, 2.0],
        help="radii of the ball around the trained head",
    )
    p.add_argument("--rounds", type=integer(1), default=5, help="rounds of re-picking (i, j)")
    p.add_argument("--steps", type=integer(1), default=20, help="ascent steps per round")
    p.add_argument(
        "--step-frac", type=number(0.0, lo_open=True), default=0.2, help="step length / delta"
    )
    p.add_argument("--max-samples", type=integer(0), default=5000, help="rows per domain (0: all)")
    p.add_argument(
        "--data-dir",
        default=None,
        type=nonempty_path,
        help="data directory (default $DGALIGN_DATA)",
    )
    p.add_argument(
        "--out", default=None, type=nonempty_path, help="output folder (default RUN_DIR)"
    )
    p.set_defaults(handler=_run_transferability)


def _run_transferability(args: argparse.Namespace) -> int:
    from dgalign.analysis.transferability import analyze_transferability

    _, png = analyze_transferability(
        args.run_dir,
        args.deltas,
        args.rounds,
        args.steps,
        args.step_frac,
        args.max_samples,
        args.data_dir,
        args.out,
        report=print,
    )
    print(f"wrote {png}")
    return 0


ANALYSES: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_flatness,
    _add_surface,
    _add_latent,
    _add_transferability,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "analyze",
        help="analyses of saved runs (flatness, loss surfaces, latent codes, transferability)",
        description="Analyses of finished runs; each writes PNG plots and prints its numbers.",
    )
    analyses = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    for add in ANALYSES:
        add(analyses)
