"""The job grid: DomainBed's order, counts, directory hashes and seeds; validation errors."""

import hashlib
import json

import pytest

from dgalign.cli import build_parser
from dgalign.errors import ConfigError
from dgalign.sweep import SweepSpec, held_out_sets, job_hash
from dgalign.utils.seeding import seed_hash


def test_test_env_sets_follow_domainbed():
    assert held_out_sets(3, single_only=False) == [[0], [0, 1], [0, 2], [1], [1, 2], [2]]
    assert held_out_sets(3, single_only=True) == [[0], [1], [2]]
    assert len(held_out_sets(6, single_only=False)) == 6 + 15
    assert held_out_sets(2, single_only=False) == [[0], [1]]  # a pair would leave no train env


def test_grid_size_order_and_names(kit, tmp_path):
    spec = kit.fast_spec(
        tmp_path, algorithms=["ERM", "ERM"], n_hparams=2, n_trials=2, single_test_envs=False
    )
    jobs = spec.jobs()
    assert len(jobs) == 2 * 2 * 6 * 2  # trials x algorithms x test-env sets x hparams seeds
    first = jobs[0].train_args
    assert (first["trial_seed"], first["test_envs"], first["hparams_seed"]) == (0, [0], 0)
    assert jobs[1].train_args["hparams_seed"] == 1 and jobs[2].train_args["test_envs"] == [0, 1]
    assert jobs[-1].train_args["trial_seed"] == 1
    for job in jobs:
        digest = hashlib.md5(json.dumps(job.train_args, sort_keys=True).encode()).hexdigest()
        assert job.name == digest and job.output_dir.parent == (tmp_path / "sweep").resolve()
    a = first
    assert a["seed"] == seed_hash(a["dataset"], a["algorithm"], a["test_envs"], 0, 0)
    assert "spec" not in a and a["hparams"] == kit.FAST and a["steps"] == 6


def test_hash_ignores_data_dir_but_not_options(kit, tmp_path):
    base = kit.fast_spec(tmp_path).jobs()[0]
    assert kit.fast_spec(tmp_path, data_dir="/elsewhere").jobs()[0].name == base.name
    assert kit.fast_spec(tmp_path, steps=7).jobs()[0].name != base.name
    assert kit.fast_spec(tmp_path, seed=3).jobs()[0].train_args["seed"] != base.train_args["seed"]
    assert (
        kit.fast_spec(tmp_path, n_hparams_from=1, n_hparams=2).jobs()[0].train_args["hparams_seed"]
        == 1
    )
    plain = {
        k: v for k, v in base.train_args.items() if k not in ("steps", "checkpoint_freq", "hparams")
    }
    no_options = kit.fast_spec(tmp_path, steps=None, checkpoint_freq=None, hparams=None).jobs()[0]
    assert no_options.train_args == plain and no_options.name == job_hash(plain)


def test_train_argv_parses_back_to_the_job(kit, tmp_path):
    job = kit.fast_spec(tmp_path, data_dir="/data", single_test_envs=False).jobs()[1]
    args = build_parser().parse_args(job.train_argv())
    assert args.test_envs == [0, 1] and args.hparams == kit.FAST and args.data_dir == "/data"
    assert args.seed == job.train_args["seed"] and args.output_dir == str(job.output_dir)
    assert job.command("py")[:3] == ["py", "-m", "dgalign"]
    assert job.command_str().startswith("python -m dgalign train --algorithm ERM")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"datasets": ["PACSS"]}, "unknown dataset 'PACSS'"),
        ({"algorithms": ["ERN"]}, "unknown algorithm 'ERN'"),
        ({"n_hparams_from": 3, "n_hparams": 3}, "--n-hparams-from 3 must be in [0, --n-hparams 3)"),
        ({"n_trials": 0}, "--n-trials must be at least 1"),
        ({"hparams": "{lr: 1}"}, "--hparams is not valid JSON"),
        ({"hparams": '{"lrr": 1}'}, "unknown hyper-parameter(s) lrr"),
        ({"holdout_fraction": 1.5}, "--holdout-fraction must be in (0, 1)"),
        ({"steps": 0}, "--steps must be at least 1"),
    ],
)
def test_validation_errors(kit, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as info:
        kit.fast_spec(tmp_path, **overrides).validate()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_shape_describes_the_grid(tmp_path):
    spec = SweepSpec(
        str(tmp_path), ["Spurious28", "RotatedMNIST"], ["ERM"], n_hparams=3, n_trials=2
    )
    assert spec.shape() == (
        "2 trial(s) x 2 dataset(s) x 1 algorithm(s) x 6/21 test-env set(s) x 3 hparams seed(s)"
    )
    assert len(spec.jobs()) == 2 * (6 + 21) * 3


def test_jobs_carry_the_precision_switches(kit, tmp_path):
    from dgalign.train import RunConfig

    base = kit.fast_spec(tmp_path).jobs()[0]
    assert "precision" not in base.train_args and "deterministic" not in base.train_args
    assert kit.fast_spec(tmp_path, precision="fp32").jobs()[0].name == base.name
    jobs = kit.fast_spec(tmp_path, precision="bf16", deterministic=True).jobs()
    assert len(jobs) == 3
    for job in jobs:
        assert job.train_args["precision"] == "bf16" and job.train_args["deterministic"] is True
        config = RunConfig(**job.config_kwargs())
        assert (config.precision, config.deterministic) == ("bf16", True)
        args = build_parser().parse_args(job.train_argv())
        assert (args.precision, args.deterministic) == ("bf16", True)
    assert jobs[0].name != base.name  # part of the run identity, so of the directory name
    tf32 = kit.fast_spec(tmp_path, precision="tf32").jobs()[0]
    assert tf32.name not in (base.name, jobs[0].name) and "deterministic" not in tf32.train_args


def test_jobs_carry_autolr(kit, tmp_path):
    """`--autolr` reaches every job's train arguments and command line, and only then enters
    the job hash. Mutation caught: a SweepSpec that drops the flag (train_argv without it)."""
    from dgalign.train import RunConfig

    base = kit.fast_spec(tmp_path).jobs()[0]
    assert "autolr" not in base.train_args
    jobs = kit.fast_spec(tmp_path, autolr=True).jobs()
    for job in jobs:
        assert "--autolr" in job.train_argv() and build_parser().parse_args(job.train_argv()).autolr
        assert RunConfig(**job.config_kwargs()).autolr
    assert jobs[0].name != base.name
    with pytest.raises(ConfigError, match=r"^--autolr cannot be combined with --protocol swad"):
        kit.fast_spec(tmp_path, autolr=True, protocol="swad").validate()


def test_unknown_precision_is_a_one_line_error(kit, tmp_path):
    with pytest.raises(ConfigError, match=r"^--precision must be one of fp32, tf32, bf16"):
        kit.fast_spec(tmp_path, precision="fp16").validate()
