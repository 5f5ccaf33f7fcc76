"""The probing protocol: registered algorithms on an identity featurizer with SGD, stratified
per-domain batches, per-domain penalties, worst-group selection, every algorithm end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dgalign.errors import ConfigError
from dgalign.probe import train as probe_train
from dgalign.probe.features import load_features
from dgalign.probe.projection import ProjectionConfig
from dgalign.probe.train import (
    ALGORITHMS,
    FrozenFeatures,
    ProbeConfig,
    build_algorithm,
    epoch_batches,
    group_accuracies,
    parse_seeds,
    resolve,
    run_seed,
)


def test_algorithms_get_sgd_and_an_identity_featurizer_also_after_annealing():
    base, hparams = resolve("CMA", {"penalty_anneal_iters": 1}, lr=0.01)
    algorithm = build_algorithm(base, hparams, dim=5, num_classes=3, num_domains=2)
    assert isinstance(algorithm.featurizer, FrozenFeatures) and algorithm.featurizer.n_outputs == 5
    assert type(algorithm).__name__ == "CMA"
    assert isinstance(algorithm.optimizer, torch.optim.SGD)
    assert algorithm.optimizer.param_groups[0]["lr"] == 0.01
    params = {id(p) for p in algorithm.optimizer.param_groups[0]["params"]}
    assert params == {id(p) for p in algorithm.classifier.parameters()}
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(6, 5, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(2)
    ]
    algorithm.update(batches)
    logs = algorithm.update(batches)  # the penalty switches on: optimizer re-created
    assert "hess_penalty" in logs and isinstance(algorithm.optimizer, torch.optim.SGD)


def test_variants_and_overrides_resolve_and_bad_names_are_refused():
    assert resolve("CMA-kfac", {}, 1e-3)[1]["hessian_mode"] == "kfac"
    assert resolve("CMA-order3", {"gamma": 5.0}, 1e-3)[1]["gamma"] == 5.0
    assert resolve("HessianDiag-expected", {}, 1e-3)[1]["expected_probes"] == 300
    base, hp = resolve("HGP", {}, 1e-3)
    assert base == "HGP" and hp["lr"] == 1e-3 and hp["weight_decay"] == 0.0
    with pytest.raises(ConfigError, match="unknown probing algorithm 'MLDG'"):
        resolve("MLDG", {}, 1e-3)
    with pytest.raises(ConfigError, match="unknown hyper-parameter"):
        resolve("ERM", {"nope": 1}, 1e-3)


def test_epoch_batches_cover_every_row_once_and_every_domain_every_step():
    rng = np.random.default_rng(0)
    domain = np.array([0] * 1300 + [1] * 180 + [2] * 3)
    batches = epoch_batches(domain, 3, 500, rng)
    assert len(batches) == 3  # ceil(1483 / 500)
    for step in batches:
        assert all(len(rows) > 0 for rows in step)
        assert all((domain[rows] == e).all() for e, rows in enumerate(step))
        assert abs(sum(len(r) for r in step) - 500) < 10
    rows = np.concatenate([r for step in batches for r in step[:2]])
    assert sorted(rows.tolist()) == list(range(1480))  # domains 0 and 1: each row once
    assert sum(len(step[2]) for step in batches) == 6  # domain 2 cycled to 2 rows a step


def test_group_accuracies_report_the_worst_present_group():
    pred = np.array([0, 0, 1, 1, 1, 0])
    label = np.array([0, 1, 1, 1, 0, 0])
    group = np.array([0, 1, 3, 3, 2, 0])
    accs = group_accuracies(pred, label, group, num_groups=4)
    assert accs["groups"] == {"0": 1.0, "1": 0.0, "2": 0.0, "3": 1.0}
    assert accs["worst"] == 0.0 and accs["avg"] == pytest.approx(4 / 6)


def test_each_minibatch_holds_one_domain_and_per_domain_penalties_are_not_zero(
    feature_dir, monkeypatch
):
    """The authors' linear-probing HGP and Hutchinson baselines take every environment's
    gradient on the whole batch (so the gradient term is zero); here each domain's own."""
    fs = load_features(feature_dir)
    seen, penalties = [], []
    original = probe_train.build_algorithm

    def spy(*args, **kwargs):
        algorithm = original(*args, **kwargs)
        update = algorithm.update

        def record(minibatches):
            seen.append([y.clone() for _, y in minibatches])
            z = torch.cat([x for x, _ in minibatches])
            y = torch.cat([y for _, y in minibatches])
            _, terms = algorithm.penalties(z, y, [len(x) for x, _ in minibatches])
            penalties.append(terms["grad_penalty"].item())
            return update(minibatches)

        algorithm.update = record
        return algorithm

    monkeypatch.setattr(probe_train, "build_algorithm", spy)
    run_seed(fs, ProbeConfig("HGP", epochs=1, batch_size=50), seed=0)
    train = fs.rows("train")
    assert len(seen) == math.ceil(len(train) / 50)
    assert all(len(step) == 2 for step in seen) and min(penalties) > 0
    x = torch.from_numpy(fs.features[train])
    y = torch.from_numpy(fs.label[train])
    base, hp = resolve("HGP", {}, 1e-3)
    algorithm = original(base, hp, x.shape[1], 2, 2)
    _, pooled = algorithm.penalties(torch.cat([x, x]), torch.cat([y, y]), [len(x)] * 2)
    assert pooled["grad_penalty"].item() < 1e-12  # what whole-batch gradients give


def test_selection_picks_the_best_worst_group_validation_epoch(feature_dir):
    fs = load_features(feature_dir)
    record = run_seed(fs, ProbeConfig("ERM", epochs=4, batch_size=40, lr=0.05), seed=1)
    history = record["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    best = max(history, key=lambda h: (h["val"]["worst"], -h["epoch"]))
    assert record["selected_epoch"] == best["epoch"]
    assert record["test_worst"] == best["test"]["worst"]
    assert record["test_avg"] == best["test"]["avg"]
    again = run_seed(fs, ProbeConfig("ERM", epochs=4, batch_size=40, lr=0.05), seed=1)
    assert again["history"] == history  # seeded


def test_isr_mean_makes_erm_robust_to_the_spurious_feature(make_feature_dir):
    """The synthetic attribute column flips between train and test: ERM relies on it, ERM on
    ISR-Mean-projected features cannot."""
    fs = load_features(make_feature_dir(n=1000))
    config = ProbeConfig("ERM", epochs=20, batch_size=40, lr=0.1)
    plain = run_seed(fs, config, seed=0)
    isr = run_seed(
        fs,
        ProbeConfig(
            "ERM", epochs=20, batch_size=40, lr=0.1, projection=ProjectionConfig(isr_mean=True)
        ),
        seed=0,
    )
    assert plain["last_test_worst"] < 0.5 < 0.7 < isr["last_test_worst"]


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_runs_the_protocol(name, make_feature_dir):
    fs = load_features(make_feature_dir(n=60, num_classes=3))
    hparams = {"n_probes": 4} if name == "Hutchinson" else {}
    config = ProbeConfig(
        name,
        hparams=hparams,
        epochs=2,
        batch_size=20,
        projection=ProjectionConfig(pca_dim=4),
        domains="group" if name == "GroupDRO" else "environment",
    )
    record = run_seed(fs, config, seed=0)
    assert 0 <= record["test_worst"] <= record["test_avg"] <= 1
    assert all(math.isfinite(h["loss"]) for h in record["history"])


def test_bad_protocol_settings_are_refused(feature_dir):
    fs = load_features(feature_dir)
    for config, match in (
        (ProbeConfig("ERM", epochs=0), "--epochs"),
        (ProbeConfig("ERM", batch_size=0), "--batch-size"),
        (ProbeConfig("ERM", domains="colour"), "--domains"),
        (ProbeConfig("ERM", device="gpu0"), "not a torch device"),
    ):
        with pytest.raises(ConfigError, match=match):
            run_seed(fs, config, seed=0)
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    for bad in ("", "a", "1,1", "-1"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)
