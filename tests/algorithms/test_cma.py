"""CMA: full / gram / diag Hessian penalties against explicit autograd Hessians (float64), the
gradient penalty, the memory budget of `full`, training in every mode, annealing, lr space."""

from __future__ import annotations

import math

import pytest
import torch
from tests.curvature.helpers import explicit, make_domains, split_params

from dgalign import algorithms
from dgalign.algorithms.cma import full_hessian_bytes
from dgalign.algorithms.spaces import default_hparams, random_hparams
from dgalign.errors import ConfigError

MODES = ("full", "gram", "diag")


def make_sets(c: int, d: int, ns: tuple[int, ...], seed: int = 0):
    """Head W [C, d+1] (bias last), its weight and bias leaves, per-domain features z_e
    (shifted by 0.5 per domain) and labels, float64."""
    w, zs, ys = make_domains(c, d, ns, seed, shift=0.5)
    weight, bias = split_params(w)
    return w, weight, bias, zs, ys


def cma_terms(mode, weight, bias, zs, ys, **over):
    hp = {**default_hparams("CMA", "PACS"), "hessian_mode": mode, **over}
    z, y = torch.cat(zs), torch.cat(ys)
    return algorithms.get("CMA").head_penalties(z, weight, bias, y, [len(t) for t in ys], hp)[1]


@pytest.mark.parametrize("c", [1, 2, 4])
def test_full_gram_diag_match_explicit_hessians(c):
    """normalization none: the terms as written, against explicit autograd Hessians."""
    w, weight, bias, zs, ys = make_sets(c, 3, (5, 7, 4))
    per = [explicit(w, z, y) for z, y in zip(zs, ys, strict=True)]
    hs, gs = [h for _, h in per], [g for g, _ in per]
    h_bar, g_bar = sum(hs) / 3, sum(gs) / 3
    want = sum((h - h_bar).square().sum() for h in hs) / 3
    want_grad = sum((g - g_bar).square().sum() for g in gs) / 3
    ds = [torch.diagonal(h) for h in hs]
    want_diag = sum((dd - sum(ds) / 3).square().sum() for dd in ds) / 3
    for mode, hess in (("full", want), ("gram", want), ("diag", want_diag)):
        terms = cma_terms(mode, weight, bias, zs, ys, normalization="none")
        torch.testing.assert_close(terms["hess_penalty"], hess)
        torch.testing.assert_close(terms["grad_penalty"], want_grad)
    summed = cma_terms("full", weight, bias, zs, ys, normalization="none", reduction="sum")
    torch.testing.assert_close(summed["hess_penalty"], 3 * want)


def _authors_cma(w, zs, ys, grad_weight, hess_weight, resnet):
    """The CMA authors' computation as their DomainBed code does it: the head gradient and the
    Hessian of each domain divided by C, and for a ResNet backbone the weights divided by
    2048/384 (the Hessian weight by its square)."""
    c = w.shape[0]
    per = [explicit(w, z, y) for z, y in zip(zs, ys, strict=True)]
    gs, hs = [g / c for g, _ in per], [h / c for _, h in per]
    k = len(per)
    grad = sum((g - sum(gs) / k).square().sum() for g in gs) / k
    hess = sum((h - sum(hs) / k).square().sum() for h in hs) / k
    if resnet:
        grad_weight, hess_weight = grad_weight / (2048 / 384), hess_weight / (2048 / 384) ** 2
    return grad_weight * grad + hess_weight * hess


@pytest.mark.parametrize("backbone", ["mlp", "resnet50"])
def test_authors_normalisation_equals_their_penalty(backbone):
    """Our weighted CMA penalty with the default normalisation equals the authors' (fixed case:
    C = 7, three domains), and equals the unnormalised one times 1/C^2 (and, on a ResNet, the
    weight factors 384/2048 and (384/2048)^2)."""
    c = 7
    w, weight, bias, zs, ys = make_sets(c, 3, (6, 5, 4), seed=3)
    cls = algorithms.get("CMA")
    hp = {**default_hparams("CMA", "PACS"), "hessian_mode": "full", "backbone": backbone}
    ours = cma_terms("full", weight, bias, zs, ys, backbone=backbone)
    weights = cls.term_weights(hp, c)
    penalty = sum(weights[k] * v for k, v in ours.items())
    theirs = _authors_cma(w, zs, ys, hp["grad_weight"], hp["hess_weight"], backbone != "mlp")
    torch.testing.assert_close(penalty, theirs)
    plain = cma_terms("full", weight, bias, zs, ys, normalization="none")
    plain_w = cls.term_weights({**hp, "normalization": "none"}, c)
    r = 384 / 2048 if backbone == "resnet50" else 1.0
    for k, factor in (("grad_penalty", r / c**2), ("hess_penalty", r**2 / c**2)):
        torch.testing.assert_close(weights[k] * ours[k], factor * plain_w[k] * plain[k])


def test_full_mode_refuses_above_the_budget_before_allocating():
    # One 65 x 5001 head Hessian alone would need 1e11 entries: the check must come first.
    weight, bias = torch.randn(65, 5000), torch.randn(65)
    z = torch.randn(8, 5000)
    y = torch.randint(0, 65, (8,))
    hp = {**default_hparams("CMA", "PACS"), "hessian_mode": "full"}
    with pytest.raises(ConfigError, match="hessian_memory_mb") as info:
        algorithms.get("CMA").head_penalties(z, weight, bias, y, [4, 4], hp)
    assert "\n" not in str(info.value) and "gram" in str(info.value)
    assert full_hessian_bytes(2, 65, 5000) > 1024 * 2**20


def test_algorithm_refuses_full_mode_at_construction(tiny):
    with pytest.raises(ConfigError, match="hessian_mode 'full'"):
        tiny("CMA", hessian_mode="full", hessian_memory_mb=1e-4)
    with pytest.raises(ConfigError, match="hessian_mode must be"):
        tiny("CMA", hessian_mode="exact")
    tiny("CMA", hessian_mode="full")  # 3 x 7 head: well within the default budget


@pytest.mark.parametrize("dataset", ["Spurious28", "ColoredMNIST"])
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
    assert (hp["grad_weight"], hp["hess_weight"], hp["hessian_mode"]) == (5000.0, 1000.0, "gram")
    assert hp["normalization"] == "authors" and hp["reduction"] == "mean"
    for seed in range(1, 6):
        draw = random_hparams("CMA", "PACS", seed)
        assert 10 <= draw["grad_weight"] <= 1e4 and 10 <= draw["hess_weight"] <= 1e4
        assert 100 <= draw["penalty_anneal_iters"] <= 10**4


@pytest.mark.parametrize("mode", MODES)
def test_curvature_magnitude_term_matches_explicit_hessians(mode):
    """curv_weight > 0: curv_penalty = (1/K) sum_e (||H_e||^2 + ||Hbar||^2) in every mode,
    weighed by curv_weight; curv_weight 0 leaves the term out."""
    w, weight, bias, zs, ys = make_sets(2, 3, (5, 7, 4))
    hs = [h for _, h in (explicit(w, z, y) for z, y in zip(zs, ys, strict=True))]
    h_bar = sum(hs) / 3
    want = sum(h.square().sum() + h_bar.square().sum() for h in hs) / 3
    terms = cma_terms(mode, weight, bias, zs, ys, normalization="none", curv_weight=0.5)
    torch.testing.assert_close(terms["curv_penalty"], want)
    assert "curv_penalty" not in cma_terms(mode, weight, bias, zs, ys)
    hp = {**default_hparams("CMA", "PACS"), "curv_weight": 0.5, "backbone": "resnet50"}
    weights = algorithms.get("CMA").term_weights(hp, 2)
    assert weights["curv_penalty"] == pytest.approx(0.5 / (2048 / 384) ** 2)


def test_curvature_weight_search_includes_off():
    draws = [random_hparams("CMA", "PACS", s)["curv_weight"] for s in range(1, 41)]
    assert default_hparams("CMA", "PACS")["curv_weight"] == 0.0
    assert 0.0 in draws and max(draws) > 10
    assert all(d == 0.0 or 0.1 <= d <= 1e3 for d in draws)
