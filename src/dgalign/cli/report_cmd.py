"""`dgalign report DIR`: results tables of a sweep (ours or DomainBed's), plots, and the
ranked hyper-parameter configurations of one test environment."""

from __future__ import annotations

import argparse
from pathlib import Path

from dgalign.errors import ConfigError
from dgalign.report import FORMATS, make_sections, summary_line
from dgalign.report.render import render
from dgalign.report.runs import algorithm_names, environment_names, load_runs
from dgalign.report.top import render_top, resolve_test_env, top_hparams
from dgalign.selection import get_methods


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help="results tables of a sweep (mean +/- standard error over trials)",
        description="Tables of test accuracy per dataset, algorithm and test environment under "
        "DomainBed's model selection methods, with notes on missing results. Reads dgalign's "
        "and DomainBed's sweep directories.",
    )
    parser.add_argument("dir", metavar="DIR", help="sweep directory (one run dir per job)")
    parser.add_argument(
        "--format",
        default="markdown",
        help=f"{' | '.join(FORMATS)} | html (one self-contained page with the plots, written "
        "to --output or DIR/report.html; DIR may also be a `reproduce cmnist` directory)",
    )
    parser.add_argument(
        "--selection",
        default="all",
        help="training | loo | oracle | autolr | all (default all: every method but autolr)",
    )
    parser.add_argument(
        "--include-incomplete",
        action="store_true",
        help="also use the records of unfinished runs (DomainBed's behaviour)",
    )
    parser.add_argument("--output", default=None, help="write the report to this file too")
    parser.add_argument("--plots", action="store_true", help="write PNG plots")
    parser.add_argument("--plot-dir", default=None, help="where plots go (default DIR/plots)")
    parser.add_argument(
        "--top-hparams",
        action="store_true",
        help="rank the configurations of --dataset/--algorithm/--test-env",
    )
    parser.add_argument("--dataset", default=None, help="with --top-hparams")
    parser.add_argument("--algorithm", default=None, help="with --top-hparams")
    parser.add_argument("--test-env", default=None, help="with --top-hparams: index or name")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.format not in (*FORMATS, "html"):
        valid = ", ".join((*FORMATS, "html"))
        raise ConfigError(f"unknown --format {args.format!r}; valid formats: {valid}")
    methods = get_methods(args.selection)
    given = [n for n in ("dataset", "algorithm", "test_env") if getattr(args, n) is not None]
    if given and not args.top_hparams:
        raise ConfigError(f"--{given[0].replace('_', '-')} only applies with --top-hparams")
    if args.format == "html":
        return _html(args)
    runs = load_runs(args.dir)
    if args.top_hparams:
        text = _top(args, runs, methods)
    else:
        sections = make_sections(runs, args.selection, args.include_incomplete)
        text = render(sections, args.format, summary_line(args.dir, runs, args.include_incomplete))
        if args.plots:
            from dgalign.report.plots import write_plots

            plot_dir = Path(args.plot_dir) if args.plot_dir else Path(args.dir) / "plots"
            written = write_plots(runs, sections, plot_dir, algorithm_names(runs))
            if args.format != "csv":
                text += f"\n{len(written)} plot(s) written to {plot_dir}\n"
    print(text, end="")
    if args.output:
        Path(args.output).write_text(text)
    return 0


def _top(args: argparse.Namespace, runs, methods) -> str:
    missing = [n for n in ("dataset", "algorithm", "test_env") if getattr(args, n) is None]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        raise ConfigError(f"--top-hparams needs {flags}")
    env = resolve_test_env(args.dataset, str(args.test_env), runs)
    env_name = environment_names(args.dataset, runs)[env]
    parts = []
    for method in methods:
        ranking = top_hparams(
            runs, method, args.dataset, args.algorithm, env, args.include_incomplete
        )
        parts.append(render_top(ranking, method, args.dataset, args.algorithm, env_name))
    return "\n".join(parts)


def _html(args: argparse.Namespace) -> int:
    """Write the HTML page of a sweep or a reproduction directory; print where it went."""
    from dgalign.report.html import reproduction_page, sweep_page
    from dgalign.runs import is_reproduction
    from dgalign.utils.io import atomic_write_text

    if args.top_hparams or args.plots:
        flag = "--top-hparams" if args.top_hparams else "--plots"
        raise ConfigError(f"{flag} does not apply to --format html, whose page has them all")
    if is_reproduction(args.dir):
        text = reproduction_page(args.dir)
    else:
        runs = load_runs(args.dir)
        sections = make_sections(runs, args.selection, args.include_incomplete)
        header = summary_line(args.dir, runs, args.include_incomplete)
        text = sweep_page(runs, sections, header, args.selection, args.include_incomplete)
    output = Path(args.output) if args.output else Path(args.dir) / "report.html"
    atomic_write_text(output, text)
    print(f"HTML report written to {output}")
    return 0
