"""`dgalign sweep launch --protocol swad`: the fixed grid, SWAD on, single test envs."""

from dgalign.cli import build_parser
from dgalign.hparam_grids import grid_point, run_hparams
from dgalign.sweep import SweepSpec
from dgalign.train import RunConfig


def test_swad_protocol_jobs(tmp_path):
    spec = SweepSpec(
        output_dir=str(tmp_path),
        datasets=["Spurious28"],
        algorithms=["ERM", "FGMix"],
        n_trials=2,
        protocol="swad",
    )
    spec.validate()
    jobs = spec.jobs()
    assert len(jobs) == 2 * 2 * 3 * 18  # trials x algorithms x single test envs x grid
    assert {tuple(j.train_args["test_envs"]) for j in jobs} == {(0,), (1,), (2,)}
    assert {j.train_args["hparams_seed"] for j in jobs} == set(range(1, 19))
    assert len({j.name for j in jobs}) == len(jobs)
    assert "18 hparams seed(s)" in spec.shape()
    job = jobs[4]
    argv = job.train_argv()
    assert "--swad" in argv and argv[argv.index("--hparams-grid") + 1] == "swad"
    args = build_parser().parse_args(argv)
    assert args.swad and args.hparams_grid == "swad"
    config = RunConfig(**job.config_kwargs())
    hparams = run_hparams(config)
    for key, value in grid_point("swad", job.train_args["hparams_seed"]).items():
        assert hparams[key] == value


def test_domainbed_protocol_is_unchanged(tmp_path):
    spec = SweepSpec(output_dir=str(tmp_path), datasets=["Spurious28"], algorithms=["ERM"],
                     n_hparams=2, n_trials=1)  # fmt: skip
    jobs = spec.jobs()
    assert len(jobs) == 6 * 2 and all("swad" not in j.train_args for j in jobs)
