"""CMA: full / gram / diag Hessian penalties against explicit autograd Hessians (float64), the
gradient penalty, the memory budget of `full`, training in every mode, annealing, lr space."""

from __future__ import annotations

import math

import pytest
import torch
from tests.curvature.helpers import explicit, make_domains, ref_logits

from dgalign import algorithms
from dgalign.algorithms.cma import (
    cma_gradient_penalty,
    cma_hessian_penalty,
    full_hessian_bytes,
    hessian_gram,
)
from dgalign.errors import ConfigError
from dgalign.algorithms.spaces import default_hparams, random_hparams

MODES = ("full", "gram", "diag")


def make_sets(c: int, d: int, ns: tuple[int, ...], seed: int = 0):
    """Head W [C, d+1] (bias last) and per-domain (z, logits, y), float64, z shifted by 0.5 per
    domain and requiring grad, logits with a graph to z."""
    w, zs, ys = make_domains(c, d, ns, seed, shift=0.5)
    zs = [z.requires_grad_() for z in zs]
    return w, zs, [ref_logits(w, z) for z in zs], ys


@pytest.mark.parametrize("c", [1, 2, 4])
def test_full_gram_diag_match_explicit_hessians(c):
    w, zs, logits, ys = make_sets(c, 3, (5, 7, 4))
    hs = [explicit(w, z, y)[1] for z, y in zip(zs, ys, strict=True)]
    h_bar = sum(hs) / 3
    want = sum((h - h_bar).square().sum() for h in hs) / 3
    full = cma_hessian_penalty(zs, logits, "full")
    gram = cma_hessian_penalty(zs, logits, "gram")
    torch.testing.assert_close(full, want)
    torch.testing.assert_close(gram, want)
    ds = [torch.diagonal(h) for h in hs]
    d_bar = sum(ds) / 3
    want_diag = sum((d - d_bar).square().sum() for d in ds) / 3
    torch.testing.assert_close(cma_hessian_penalty(zs, logits, "diag"), want_diag)
    gram_matrix = hessian_gram(zs, logits)
    explicit_gram = torch.stack([torch.stack([(a * b).sum() for b in hs]) for a in hs])
    torch.testing.assert_close(gram_matrix, explicit_gram)


@pytest.mark.parametrize("c", [1, 3])
def test_full_and_gram_agree_with_gradients_to_features(c):
    _, zs, logits, _ = make_sets(c, 6, (8, 8), seed=1)
    g_full = torch.autograd.grad(cma_hessian_penalty(zs, logits, "full"), zs, retain_graph=True)
    g_gram = torch.autograd.grad(cma_hessian_penalty(zs, logits, "gram"), zs)
    for a, b in zip(g_full, g_gram, strict=True):
        torch.testing.assert_close(a, b)
        assert a.abs().sum() > 0


@pytest.mark.parametrize("c", [1, 3])
def test_gradient_penalty_matches_autograd(c):
    w, zs, logits, ys = make_sets(c, 3, (6, 3), seed=2)
    gs = [explicit(w, z, y)[0] for z, y in zip(zs, ys, strict=True)]
    g_bar = sum(gs) / 2
    want = sum((g - g_bar).square().sum() for g in gs) / 2
    torch.testing.assert_close(cma_gradient_penalty(zs, logits, ys), want)


def test_full_mode_refuses_above_the_budget_before_allocating():
    # One 65 x 5001 head Hessian alone would need 1e11 entries: the check must come first.
    z = torch.randn(4, 5000)
    logits = torch.randn(4, 65)
    with pytest.raises(ConfigError, match="hessian_memory_mb") as info:
        cma_hessian_penalty([z, z], [logits, logits], "full", memory_mb=1024)
    assert "\n" not in str(info.value) and "gram" in str(info.value)
    assert full_hessian_bytes(2, 65, 5000) > 1024 * 2**20


def test_algorithm_refuses_full_mode_at_construction(tiny):
    with pytest.raises(ConfigError, match="hessian_mode 'full'"):
        tiny("CMA", hessian_mode="full", hessian_memory_mb=1e-4)
    with pytest.raises(ConfigError, match="hessian_mode must be"):
        tiny("CMA", hessian_mode="exact")
    tiny("CMA", hessian_mode="full")  # 3 x 7 head: well within the default budget


@pytest.mark.parametrize("dataset", ["Debug28", "ColoredMNIST"])
def test_every_mode_trains_on_the_small_datasets(small_datasets, batches, dataset):
    data = small_datasets[dataset]
    for mode in MODES:
        hparams = default_hparams("CMA", dataset)
        hparams.update(backbone="mlp", mlp_width=16, hessian_mode=mode, penalty_anneal_iters=0)
        torch.manual_seed(0)
        algorithm = algorithms.get("CMA")(data.input_shape, data.num_classes, 2, hparams)
        for step in range(2):
            logs = algorithm.update(batches(data, (0, 1), start=step))
            assert set(logs) == {"loss", "nll", "grad_penalty", "hess_penalty"}
            assert all(math.isfinite(v) for v in logs.values()), (mode, logs)


def test_one_logit_head_trains(tiny, tiny_data):
    algorithm = tiny("CMA", num_classes=1, penalty_anneal_iters=0)
    data = [(x, (y % 2).double()) for x, y in tiny_data()]
    logs = [algorithm.update(data) for _ in range(3)]
    assert all(math.isfinite(v) for log in logs for v in log.values())
    assert logs[-1]["hess_penalty"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_penalties_reach_the_featurizer_and_vanish_for_identical_domains(tiny, tiny_data, mode):
    algorithm = tiny("CMA", hessian_mode=mode, penalty_anneal_iters=0)
    terms = algorithm.objective_terms(tiny_data())
    params = list(algorithm.featurizer.parameters())
    for key in ("grad_penalty", "hess_penalty"):
        grads = torch.autograd.grad(terms[key], params, retain_graph=True)
        assert any(g.abs().sum() > 0 for g in grads), key
    x, y = tiny_data()[0]
    same = algorithm.objective_terms([(x, y), (x, y), (x, y)])
    assert abs(same["grad_penalty"].item()) < 1e-14
    assert abs(same["hess_penalty"].item()) < 1e-14


def test_annealing_recreates_adam_when_penalties_switch_on(tiny, tiny_data):
    algorithm = tiny("CMA", penalty_anneal_iters=1)
    first = algorithm.optimizer
    assert set(algorithm.update(tiny_data())) == {"loss", "nll"}
    assert algorithm.optimizer is first
    logs = algorithm.update(tiny_data())
    assert algorithm.optimizer is not first and "hess_penalty" in logs
    algorithm.update(tiny_data())
    assert int(algorithm.update_count) == 3


def test_learning_rate_and_defaults_follow_the_authors():
    assert default_hparams("CMA", "ColoredMNIST")["lr"] == 1e-3
    for dataset in ("RotatedMNIST", "PACS", "OfficeHome"):
        assert default_hparams("CMA", dataset)["lr"] == 5e-5
    hp = default_hparams("CMA", "PACS")
    assert (hp["grad_alpha"], hp["hess_beta"], hp["hessian_mode"]) == (5000.0, 1000.0, "gram")
    for seed in range(1, 6):
        draw = random_hparams("CMA", "PACS", seed)
        assert 10 <= draw["grad_alpha"] <= 1e4 and 10 <= draw["hess_beta"] <= 1e4
        assert 100 <= draw["penalty_anneal_iters"] <= 10**4
