"""`dgalign analyze ...`: analyses of saved runs, each a subcommand writing PNGs (and a JSON of
the numbers) into RUN_DIR/analysis/ (or --out) and printing the numbers behind them.

To add an analysis, write `_add_<name>(sub)` registering its subparser and handler (`_common`
adds the shared options and sets the handler) and append it to `ANALYSES`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dgalign.cli.ranges import integer, nonempty_path, number, seed
from dgalign.errors import ConfigError


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


def _out_dir(args: argparse.Namespace, spec: str) -> Path:
    """The output folder: --out, else analysis/ beside the run of `spec` (without :swa)."""
    base = Path(spec.split(":swa")[0])
    out = Path(args.out) if args.out else (base if base.is_dir() else base.parent) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=1, default=float) + "\n")


def _trained_policy(spec: str):
    """The run whose policy makes the mixes: the trained model of `spec` even when `spec` names
    its weight average (the paper mixes with the policy of the last iteration)."""
    from dgalign.analysis.loading import load_run

    return load_run(spec.removesuffix(":swa"))


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
    from dgalign.analysis.flatness import flatness_curves, format_table, plot_flatness
    from dgalign.analysis.loading import load_source, run_data, unique_labels
    from dgalign.analysis.objective import build_objective

    if args.n_directions < 1:
        raise ConfigError(f"--n-directions must be at least 1, got {args.n_directions}")
    radii = args.radii or (
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
        if args.directions == "filter"
        else [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    )
    results, notes = [], set()
    data_cache: dict = {}
    for spec in args.runs:
        run, algorithm, label = load_source(spec, args.data_dir)
        key = (run.args["dataset"], tuple(run.test_envs), run.args["trial_seed"])
        if key not in data_cache:
            data_cache[key] = run_data(run, args.data_dir)
        mixed = args.data == "mixed" or (args.data == "auto" and hasattr(algorithm, "mix_weights"))
        policy = _trained_policy(spec) if mixed else None
        objective = build_objective(
            data_cache[key], args.max_samples, policy, args.n_mix, args.seed
        )
        notes.add("original + mixed data" if mixed else "original data")
        results.append(
            flatness_curves(
                algorithm, objective, radii, args.n_directions, args.directions, args.seed, label
            )
        )
    for result, label in zip(results, unique_labels([r.label for r in results]), strict=True):
        result.label = label
    out = _out_dir(args, args.runs[0])
    note = f"{args.directions} directions, {' / '.join(sorted(notes))}"
    png = plot_flatness(results, out / "flatness.png", args.directions, note)
    _write_json(
        out / "flatness.json",
        {
            "directions": args.directions,
            "data": sorted(notes),
            "runs": {
                r.label: {"radii": r.radii.tolist(), "base": r.base, "gaps": r.gaps.tolist()}
                for r in results
            },
        },
    )
    print(f"Local flatness ({note}), mean +- std over {args.n_directions} directions:")
    print(format_table(results))
    print(f"wrote {png}")
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
    from dgalign.analysis.loading import load_source, run_data, unique_labels
    from dgalign.analysis.objective import build_objective, get_vector
    from dgalign.analysis.surface import (
        Plane,
        compute_surface,
        format_points,
        load_path,
        plot_surface,
    )

    if args.grid < 2:
        raise ConfigError(f"--grid must be at least 2, got {args.grid}")
    sources = [load_source(spec, args.data_dir) for spec in args.weights]
    vectors = [get_vector(alg) for _, alg, _ in sources]
    if len({v.numel() for v in vectors}) != 1:
        raise ConfigError("the three weight vectors have different sizes: use runs of one network")
    runs = [run for run, _, _ in sources]
    if len({(r.args["dataset"], tuple(r.test_envs)) for r in runs}) != 1:
        raise ConfigError("the weight sources come from different datasets or test envs")
    data = run_data(runs[0], args.data_dir)
    objectives = {"train": build_objective(data, args.max_samples)}
    for spec, (run, alg, _) in zip(args.weights, sources, strict=True):
        if hasattr(alg, "mix_weights") and not spec.startswith("init:"):
            objectives[f"train + {run.name} mixes"] = build_objective(
                data, args.max_samples, _trained_policy(spec), args.n_mix, args.seed
            )
            break
    plane = Plane.through(*vectors)
    labels = unique_labels([label for _, _, label in sources])
    points = dict(zip(labels, vectors, strict=True))
    paths = dict(load_path(spec, args.data_dir) for spec in args.path)
    model = sources[-1][1]
    surface = compute_surface(model, plane, objectives, points, paths, args.grid, args.margin)
    trained = [w for w in args.weights if not w.startswith("init:")]
    out = _out_dir(args, (trained or args.weights)[0])
    test_env = data.test_envs[0]
    png = plot_surface(
        surface, out / "surface.png", f"{runs[0].args['dataset']}, test env {test_env}"
    )
    at_points = {}
    for (_, alg, _), label in zip(sources, labels, strict=True):
        at_points[label] = {f"{n} loss": o.loss(alg) for n, o in objectives.items()}
        at_points[label]["test accuracy"] = objectives["train"].test_accuracy(alg)
    _write_json(
        out / "surface.json",
        {
            "alphas": surface.alphas.tolist(),
            "betas": surface.betas.tolist(),
            "values": {k: v.tolist() for k, v in surface.values.items()},
            "points": surface.points,
            "paths": surface.paths,
            "at_points": at_points,
        },
    )
    print(f"Plane through {', '.join(labels)}; grid {args.grid}x{args.grid}:")
    print(format_points(surface, at_points))
    for name, grid in surface.values.items():
        j, i = np.unravel_index(
            np.argmax(grid) if "accuracy" in name else np.argmin(grid), grid.shape
        )
        best = "max" if "accuracy" in name else "min"
        print(
            f"{name}: {best} {grid[j, i]:.4f} at (u, v) = "
            f"({surface.alphas[i]:.3f}, {surface.betas[j]:.3f})"
        )
    print(f"wrote {png}")
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
    from dgalign.analysis.latent import collect_codes, coverage, plot_latent
    from dgalign.analysis.loading import load_source, run_data
    from dgalign.data import get_dataset_class

    if args.per_env < 2:
        raise ConfigError(f"--per-env must be at least 2, got {args.per_env}")
    run, _, label = load_source(args.run, args.data_dir)
    data = run_data(run, args.data_dir)
    latent = collect_codes(run, data, args.per_env, args.n_mix, args.seed)
    names = list(get_dataset_class(run.args["dataset"]).ENVIRONMENTS)
    out = _out_dir(args, args.run)
    png, used = plot_latent(latent, names, out / "latent.png", args.embedding, args.seed)
    if used != "t-SNE":
        print("note: scikit-learn is not installed, so the embedding is PCA, not t-SNE")
    numbers = {"embedding": used, **coverage(latent)}
    if latent.extrapolated is not None:
        numbers["extrapolated fraction"] = float(latent.extrapolated.mean())
    _write_json(out / "latent.json", numbers)
    print(f"Latent codes of {label} ({len(latent.codes)} codes, {used}):")
    for key, value in numbers.items():
        print(f"  {key}: {value if isinstance(value, str) else f'{value:.4f}'}")
    print(f"wrote {png}")
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
    from dgalign.analysis.transferability import transferability, write_transferability

    if args.max_samples < 0:
        raise ConfigError(f"--max-samples must be 0 (all) or positive, got {args.max_samples}")
    run_dir = Path(args.run_dir)
    curves = transferability(
        run_dir,
        args.deltas,
        args.rounds,
        args.steps,
        args.step_frac,
        args.max_samples or None,
        args.data_dir,
        report=print,
    )
    out = Path(args.out) if args.out else (run_dir if run_dir.is_dir() else run_dir.parent)
    out.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_transferability(curves, args.deltas, out, str(run_dir))}")
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
