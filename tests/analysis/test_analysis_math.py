"""The analyses' building blocks: loading a run, weight vectors, directions, the plane."""

from __future__ import annotations

import pytest
import torch

from dgalign.analysis import initial_algorithm, load_run, run_data
from dgalign.analysis.flatness import flatness_curves, random_direction
from dgalign.analysis.objective import build_objective, get_vector, set_vector
from dgalign.analysis.surface import Plane
from dgalign.errors import ConfigError, RunDirError
from dgalign.train.evaluate import accuracy


def test_load_run_rebuilds_the_trained_model(runs):
    run = load_run(runs["fgmix"])
    assert run.name == "FGMix" and run.test_envs == [2] and run.hparams["start_step"] == 2
    data = run_data(run)
    record = (runs["fgmix"] / "results.jsonl").read_text().splitlines()[-1]
    for i in range(3):
        assert f'"env{i}_in_acc": {accuracy(run.algorithm, data.in_splits[i], "cpu")}' in record
    swa = load_run(runs["fgmix"], swa=True)
    assert not torch.equal(get_vector(swa.algorithm), get_vector(run.algorithm))


def test_initial_algorithm_is_the_runs_initialisation(runs):
    run = load_run(runs["erm"])  # trained with lr 0: the final weights are the initial ones
    torch.testing.assert_close(get_vector(initial_algorithm(run)), get_vector(run.algorithm))


def test_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(RunDirError, match=r"has no model\.pt") as info:
        load_run(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(RunDirError, match=r"has no model_swa\.pt"):
        load_run(tmp_path, swa=True)
    (tmp_path / "model.pt").write_text("not a model")
    with pytest.raises(RunDirError, match="unreadable"):
        load_run(tmp_path)


def test_filter_normalised_direction_matches_row_norms_and_skips_biases(runs):
    algorithm = load_run(runs["erm"]).algorithm
    d = random_direction(algorithm, "filter", torch.Generator().manual_seed(0))
    theta = get_vector(algorithm)
    set_vector(algorithm, d)
    for name, p in algorithm.network.named_parameters():
        if p.dim() < 2:
            assert (p == 0).all(), name
    set_vector(algorithm, theta)
    unit = random_direction(algorithm, "unit", torch.Generator().manual_seed(0))
    torch.testing.assert_close(unit.norm(), torch.tensor(1.0))
    original = dict(algorithm.network.named_parameters())
    set_vector(algorithm, d)
    for name, p in algorithm.network.named_parameters():
        if p.dim() >= 2:
            torch.testing.assert_close(
                p.flatten(1).norm(dim=1), original[name].flatten(1).norm(dim=1)
            )
    set_vector(algorithm, theta)


def test_flatness_curves_start_at_zero_and_leave_the_model_alone(runs):
    run = load_run(runs["fgmix"])
    objective = build_objective(run_data(run), 32, run, n_mix=16)
    before = get_vector(run.algorithm)
    result = flatness_curves(run.algorithm, objective, [0.0, 1.0, 5.0], 3, label="x")
    assert result.gaps.shape == (3, 3) and (result.gaps[:, 0] == 0).all()
    assert (result.gaps[:, 1:] != 0).all()
    assert torch.equal(get_vector(run.algorithm), before)


def test_plane_coordinates_and_points_are_inverse():
    torch.manual_seed(0)
    w0, w1, w2 = torch.randn(3, 10).unbind(0)
    plane = Plane.through(w0, w1, w2)
    assert plane.coordinates(w0) == (0.0, 0.0)
    a, b = plane.coordinates(w1)
    assert a == pytest.approx(float((w1 - w0).norm())) and b == pytest.approx(0.0, abs=1e-9)
    a2, b2 = plane.coordinates(w2)
    torch.testing.assert_close(plane.point(a2, b2), w2.double())
    assert float(plane.u @ plane.v) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="collinear"):
        Plane.through(w0, w1, 2 * w1 - w0)


def test_run_data_is_built_as_the_loop_builds_it(runs, monkeypatch):
    """Datasets that draw from the global generator (the MNIST ones) come out the same as in
    training: seeded with the run's seed, whatever the caller's RNG state; which is restored."""
    from dgalign import data as data_module
    from dgalign.data import Spurious28

    class Shuffled(Spurious28):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            env = self.datasets[0]
            env.x = env.x[torch.randperm(len(env.x))]

    monkeypatch.setitem(data_module.DATASETS, "Spurious28", Shuffled)
    run = load_run(runs["erm"])
    torch.manual_seed(123)
    first = run_data(run).in_splits[0].batch(torch.arange(5))[0]
    state = torch.get_rng_state()
    second = run_data(run).in_splits[0].batch(torch.arange(5))[0]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, second)
    torch.manual_seed(run.args["seed"])  # what seed_everything does before the dataset
    assert torch.equal(run_data(run).in_splits[0].dataset.x, Shuffled().datasets[0].x)
