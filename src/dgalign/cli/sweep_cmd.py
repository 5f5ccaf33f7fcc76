"""`dgalign sweep launch|status|delete-incomplete`: DomainBed's sweeps (underscore spellings
of the options work too)."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from dgalign.cli.ranges import integer, nonempty_path, number, seed
from dgalign.cli.train_cmd import add_logger_option, add_precision_options
from dgalign.errors import ConfigError
from dgalign.plugins import explicit_specs
from dgalign.runs.state import count_states, format_counts
from dgalign.sweep import LAUNCHERS, JobState, LauncherOptions, SweepSpec, make_launcher
from dgalign.sweep.jobs import PROTOCOLS
from dgalign.sweep.status import deletable, delete_run_dirs, job_states, print_status, scan_jobs

out = functools.partial(print, flush=True)


def _option(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """`--name-with-dashes`, with DomainBed's `--name_with_underscores` as an alias."""
    spellings = [f"--{name}"]
    if "-" in name:
        spellings.append(f"--{name.replace('-', '_')}")
    parser.add_argument(*spellings, **kwargs)


def _grid_options(parser: argparse.ArgumentParser, required: bool) -> None:
    _option(
        parser,
        "output-dir",
        required=True,
        type=nonempty_path,
        help="sweep directory (one run dir per job)",
    )
    need = "" if required else " (with --algorithms: the grid of the launch; else every run dir)"
    _option(parser, "datasets", nargs="+", required=required, metavar="D", help="datasets" + need)
    _option(parser, "algorithms", nargs="+", required=required, metavar="A", help="algorithms")
    _option(
        parser,
        "n-hparams",
        type=integer(1),
        default=20,
        help="hyper-parameter seeds run from --n-hparams-from to N-1 (default 20)",
    )
    _option(
        parser, "n-hparams-from", type=integer(0), default=0, help="first hparams seed (default 0)"
    )
    _option(parser, "n-trials", type=integer(1), default=3, help="trials = split seeds (default 3)")
    _option(
        parser,
        "single-test-envs",
        action="store_true",
        help="only single test envs (default: singles and pairs, as leave-one-domain-out "
        "selection needs)",
    )
    _option(
        parser, "steps", type=integer(1), default=None, help="steps per job (default: dataset's)"
    )
    _option(
        parser,
        "checkpoint-freq",
        type=integer(1),
        default=None,
        help="evaluate every N steps (default: dataset's)",
    )
    _option(parser, "hparams", default=None, help="JSON object of hyper-parameter overrides")
    _option(
        parser,
        "holdout-fraction",
        type=number(0.0, 1.0, lo_open=True, hi_open=True),
        default=0.2,
        help="out split fraction",
    )
    _option(
        parser,
        "data-dir",
        default=None,
        type=nonempty_path,
        help="data directory (not part of the job hash)",
    )
    _option(parser, "seed", type=seed(), default=0, help="0 = DomainBed's per-job seeds")
    _option(
        parser,
        "protocol",
        choices=PROTOCOLS,
        default="domainbed",
        help="domainbed: random hyper-parameter search; swad: Cha et al.'s fixed 18-point grid "
        "(batch 32, lr {1e-5,3e-5,5e-5}, dropout {0,0.1,0.5}, weight decay {1e-4,1e-6}), "
        "--swad in every run, single test envs",
    )
    _option(
        parser,
        "defaults",
        choices=("domainbed-2020", "domainbed-main"),
        default="domainbed-2020",
        help="whose defaults every job follows (see `dgalign train --help`)",
    )
    _option(
        parser,
        "autolr",
        action="store_true",
        help="every job with --autolr (ERM++'s plateau lr schedule, then a full-data retrain; "
        "report with --selection autolr); not with --protocol swad",
    )
    add_precision_options(parser)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sweep",
        help="launch a sweep of runs, show its status, delete unfinished runs",
        description="Sweeps with DomainBed's semantics: trials x datasets x algorithms x "
        "test-env sets x hyper-parameter seeds, one run directory per job named by a hash "
        "of its arguments.",
    )
    commands = parser.add_subparsers(dest="sweep_command", metavar="COMMAND", required=True)
    launch = commands.add_parser("launch", help="run the jobs that are not done")
    _grid_options(launch, required=True)
    launch.add_argument(
        "--launcher",
        "--command-launcher",
        "--command_launcher",
        default="local",
        help=f"{' | '.join(LAUNCHERS)} (default local)",
    )
    _option(
        launch,
        "workers",
        type=integer(1),
        default=None,
        help="local/ray: jobs at once (default: one per GPU, else 1)",
    )
    _option(
        launch, "jobs-per-gpu", type=integer(1), default=None, help="local/ray: jobs sharing a GPU"
    )
    _option(
        launch,
        "max-retries",
        type=integer(0),
        default=None,
        help="local/ray: retries of a failed job within this launch (default 0)",
    )
    _option(
        launch,
        "start-method",
        default=None,
        help="local: 'forked' (from a warm server; default on CPU-only Linux) or 'fresh' "
        "(a new `python -m dgalign train` interpreter per job)",
    )
    _option(
        launch,
        "threads-per-job",
        type=integer(1),
        default=None,
        metavar="N",
        help="local: compute threads of each job (OMP_NUM_THREADS, MKL_NUM_THREADS, "
        "torch.set_num_threads; default: $OMP_NUM_THREADS when set, else max(1, CPUs // "
        "workers))",
    )
    _option(
        launch,
        "loader-workers-per-job",
        type=integer(0),
        default=None,
        metavar="N",
        help="local: DataLoader worker processes of each job, shared by its training loaders "
        "(each gets max(1, N // loaders), at most $DGALIGN_NUM_WORKERS when set; 0: load in "
        "the job's process; default: max(1, CPUs // workers), at most 8 per loader)",
    )
    _option(launch, "ray-address", default=None, help="ray: address of an existing cluster")
    _option(launch, "partition", default=None, help="slurm: partition")
    _option(launch, "time", default=None, help="slurm: time limit per job (default 24:00:00)")
    _option(launch, "gpus-per-job", type=integer(0), default=None, help="slurm: GPUs per job (1)")
    _option(launch, "cpus-per-job", type=integer(1), default=None, help="slurm: CPUs per job")
    _option(
        launch,
        "array-parallelism",
        type=integer(1),
        default=None,
        help="slurm: array tasks running at once (default 256)",
    )
    _option(
        launch,
        "submitit-cluster",
        default=None,
        help="slurm: 'slurm' (default) or 'local' (run the array on this machine)",
    )
    _option(launch, "wait", action="store_true", help="slurm: wait for the jobs to finish")
    add_logger_option(launch)
    launch.add_argument(
        "--yes",
        "--skip-confirmation",
        "--skip_confirmation",
        action="store_true",
        help="do not ask for confirmation",
    )
    launch.set_defaults(handler=run_launch)

    status = commands.add_parser("status", help="count done/running/failed/not launched jobs")
    _grid_options(status, required=False)
    status.add_argument("--tail", type=integer(0), default=5, help="err.txt lines per failed job")
    status.add_argument("-v", "--verbose", action="store_true", help="list every job")
    status.set_defaults(handler=run_status)

    delete = commands.add_parser(
        "delete-incomplete",
        aliases=["delete_incomplete"],
        help="delete the directories of failed and incomplete jobs (never running ones)",
    )
    _grid_options(delete, required=False)
    _option(delete, "yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=run_delete)


def _spec(args: argparse.Namespace) -> SweepSpec:
    spec = SweepSpec(
        output_dir=args.output_dir,
        datasets=list(args.datasets or []),
        algorithms=list(args.algorithms or []),
        n_hparams_from=args.n_hparams_from,
        n_hparams=args.n_hparams,
        n_trials=args.n_trials,
        single_test_envs=args.single_test_envs,
        steps=args.steps,
        checkpoint_freq=args.checkpoint_freq,
        hparams=args.hparams,
        holdout_fraction=args.holdout_fraction,
        data_dir=args.data_dir,
        seed=args.seed,
        loggers=list(getattr(args, "logger", [])),
        plugins=explicit_specs(),  # loaded by `dgalign.cli.main`; every job loads them too
        protocol=args.protocol,
        defaults=args.defaults,
        precision=args.precision,
        deterministic=args.deterministic,
        autolr=args.autolr,
    )
    if Path(spec.output_dir).exists() and not Path(spec.output_dir).is_dir():
        raise ConfigError(f"--output-dir {spec.output_dir} exists and is not a directory")
    spec.validate()
    return spec


def _jobs(args: argparse.Namespace):
    """(jobs, grid?) from the grid options, or every run directory when none is given."""
    if args.datasets is None and args.algorithms is None:
        return scan_jobs(args.output_dir), False
    if args.datasets is None or args.algorithms is None:
        raise ConfigError(
            "give both --datasets and --algorithms (the grid of the launch), or neither to "
            "look at every run directory"
        )
    return _spec(args).jobs(), True


def confirm(action: str, yes: bool) -> bool:
    """True if `yes`, else ask whether to `action` on the terminal; ConfigError when there is
    no terminal to ask on."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(
            f"refusing to {action} without confirmation: stdin is not a terminal; pass --yes"
        )
    return input(f"{action[0].upper()}{action[1:]}? [y/N] ").strip().lower().startswith("y")


def run_launch(args: argparse.Namespace) -> int:
    spec = _spec(args)
    options = LauncherOptions(
        workers=args.workers,
        jobs_per_gpu=args.jobs_per_gpu,
        max_retries=args.max_retries,
        start_method=args.start_method,
        threads_per_job=args.threads_per_job,
        loader_workers_per_job=args.loader_workers_per_job,
        ray_address=args.ray_address,
        partition=args.partition,
        time=args.time,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        array_parallelism=args.array_parallelism,
        submitit_cluster=args.submitit_cluster,
        wait=args.wait,
    )
    launcher = make_launcher(args.launcher, options, out)
    jobs = spec.jobs()
    states = job_states(jobs)
    out(
        f"Sweep {spec.output_dir}: {spec.shape()} = {len(jobs)} job(s): "
        f"{format_counts(count_states([s for _, s in states]))}"
    )
    todo = [job for job, state in states if state not in (JobState.DONE, JobState.RUNNING)]
    if not todo:
        out("Nothing to launch: every job is done or running.")
        return 0
    out(f"About to launch {len(todo)} job(s) with {launcher.describe()}.")
    if args.launcher != "dummy" and not confirm(f"launch {len(todo)} job(s)", args.yes):
        out("Nothing launched.")
        return 1
    summary = launcher.run(todo)
    if args.launcher == "dummy":
        return 0
    out(f"Launch finished: {summary.line()}.")
    if summary.failed:
        out(
            f"{len(summary.failed)} job(s) failed; `dgalign sweep status` shows why, and "
            "launching again retries them from their last checkpoint."
        )
        return 1
    return 0


def run_status(args: argparse.Namespace) -> int:
    jobs, grid = _jobs(args)
    if not jobs:
        raise ConfigError(f"no run directories in {args.output_dir}; launch a sweep first")
    print_status(jobs, args.output_dir, tail=args.tail, verbose=args.verbose, out=out, grid=grid)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    jobs, _ = _jobs(args)
    victims = deletable(jobs)
    if not victims:
        out("Nothing to delete: no failed or incomplete job.")
        return 0
    counts = count_states([s for _, s in victims])
    what = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    out(f"About to delete {len(victims)} run director(y/ies) ({what}).")
    if not confirm(f"delete {len(victims)} run director(y/ies)", args.yes):
        out("Nothing deleted.")
        return 1
    deleted = delete_run_dirs([job for job, _ in victims], out)
    out(f"Deleted {deleted} run director(y/ies).")
    return 0
