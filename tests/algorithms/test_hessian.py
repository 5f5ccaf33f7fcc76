"""HGP, Hutchinson, HessianDiag: penalties against explicit autograd Hessians (float64), the
expected-probes closed form against Monte Carlo, gradients to the featurizer, annealing,
1-logit heads and resume fidelity."""

from __future__ import annotations

import io
import math

import pytest
import torch
from tests.curvature.helpers import explicit, make_domains, split_params

from dgalign import algorithms
from dgalign.algorithms.hessian import (
    alignment_penalties,
    exact_diag_terms,
    hgp_terms,
    hutchinson_terms,
    probe_variance,
)
from dgalign.errors import ConfigError
from dgalign.algorithms.spaces import default_hparams, random_hparams

NAMES = ("HGP", "Hutchinson", "HessianDiag")


def make_head(c: int, d: int, ns: tuple[int, ...], seed: int = 0):
    """Head matrix W [C, d+1] (bias last), per-domain features (shifted by 0.4 per domain) and
    labels; float64."""
    return make_domains(c, d, ns, seed, shift=0.4)


def logits_of(params, zs):
    return [z @ params[0].T + params[1] for z in zs]


def to_wb(v: torch.Tensor, c: int) -> torch.Tensor:
    """A row-major [C, d+1] vector in the (weight, bias) flattening of the autograd terms."""
    m = v.reshape(c, -1)
    return torch.cat([m[:, :-1].reshape(-1), m[:, -1]])


def explicit_penalties(w, zs, ys, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(1/E) sum_e ||T_e - Tbar||^2 and ||g_e - gbar||^2 from explicit Hessians."""
    pooled = explicit(w, torch.cat(zs), torch.cat(ys))
    per = [explicit(w, z, y) for z, y in zip(zs, ys, strict=True)]

    def t(gh):
        return gh[1] @ gh[0] if kind == "hgp" else torch.diagonal(gh[1])

    hess = sum((t(gh) - t(pooled)).square().sum() for gh in per) / len(per)
    grad = sum((gh[0] - pooled[0]).square().sum() for gh in per) / len(per)
    return hess, grad


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize(("kind", "seed"), [("hgp", 0), ("diag", 1)])
def test_terms_and_penalties_match_explicit_hessians(c, kind, seed):
    """Per-domain HGP terms (H_e g_e and g_e) or exact Hessian diagonals, and both alignment
    penalties, equal those from explicit autograd Hessians."""
    w, zs, ys = make_head(c, 4, (6, 9), seed=seed)
    params = split_params(w)
    logits = logits_of(params, zs)
    if kind == "hgp":
        terms = hgp_terms(params, logits, ys, detach_mean=True)
        for z, y, t, g in zip(zs, ys, terms.hess, terms.grad, strict=True):
            grad, hess = explicit(w, z, y)
            torch.testing.assert_close(g, to_wb(grad, c))
            torch.testing.assert_close(t, to_wb(hess @ grad, c))
    else:
        terms = exact_diag_terms(zs, logits, ys, detach_mean=True)
        for z, y, t in zip(zs, ys, terms.hess, strict=True):
            torch.testing.assert_close(t.reshape(-1), torch.diagonal(explicit(w, z, y)[1]))
    got = alignment_penalties(terms)
    want = explicit_penalties(w, zs, ys, kind)
    torch.testing.assert_close(got["hess_penalty"], want[0])
    torch.testing.assert_close(got["grad_penalty"], want[1])


@pytest.mark.parametrize("c", [1, 3])
def test_hutchinson_with_many_probes_approaches_the_exact_diagonal(c):
    w, zs, ys = make_head(c, 3, (8, 8), seed=2)
    params = split_params(w)
    torch.manual_seed(0)
    terms = hutchinson_terms(params, logits_of(params, zs), ys, 20000, detach_mean=True)
    got = alignment_penalties(terms)
    want = explicit_penalties(w, zs, ys, "diag")
    torch.testing.assert_close(got["grad_penalty"], want[1])
    assert abs(got["hess_penalty"] - want[0]) < 0.05 * want[0] + 1e-4


@pytest.mark.parametrize(
    ("c", "share", "detach"), [(3, False, True), (3, True, False), (1, False, False)]
)
def test_expected_probes_is_the_mean_of_hutchinson_penalty(c, share, detach):
    """Value and gradient (w.r.t. the features) of HessianDiag's m-probe closed form equal the
    Monte Carlo means of Hutchinson's penalty with m probes (within 4.5 standard errors)."""
    m, reps = 2, 400
    w, zs, ys = make_head(c, 2, (5, 7), seed=3)
    zs = [z.requires_grad_() for z in zs]
    params = split_params(w)
    logits = logits_of(params, zs)
    torch.manual_seed(1)
    values, grads = [], []
    for _ in range(reps):
        terms = hutchinson_terms(params, logits, ys, m, detach_mean=detach, share_probes=share)
        pen = alignment_penalties(terms)["hess_penalty"]
        values.append(pen.detach())
        grads.append(
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(pen, zs, retain_graph=True)])
        )
    exact = alignment_penalties(exact_diag_terms(zs, logits, ys, detach))["hess_penalty"]
    closed = exact + probe_variance(zs, logits, m, detach, share)
    closed_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(closed, zs)])
    values, grads = torch.stack(values), torch.stack(grads)
    assert abs(values.mean() - closed) < 4.5 * values.std() / math.sqrt(reps)
    err = (grads.mean(0) - closed_grad).abs()
    assert (err < 4.5 * grads.std(0) / math.sqrt(reps) + 1e-12).all()


def test_probe_variance_with_independent_probes_is_the_offdiagonal_mass():
    """Independent probes: red_e (1/m) (||off H_e||^2 + ||off Hbar||^2), from explicit H."""
    w, zs, ys = make_head(3, 3, (4, 6), seed=4)
    logits = logits_of(split_params(w), zs)

    def off(h):
        return h.square().sum() - torch.diagonal(h).square().sum()

    h_bar = explicit(w, torch.cat(zs), torch.cat(ys))[1]
    per = [off(explicit(w, z, y)[1]) + off(h_bar) for z, y in zip(zs, ys, strict=True)]
    got = probe_variance(zs, logits, 7, reduction="sum")
    torch.testing.assert_close(got, sum(per) / 7)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("HGP", {}), ("Hutchinson", {"n_probes": 20}), ("HessianDiag", {"expected_probes": 5})],
)
def test_each_penalty_alone_reaches_the_featurizer(tiny, tiny_data, name, overrides):
    algorithm = tiny(name, **overrides)
    terms = algorithm.objective_terms(tiny_data())
    params = list(algorithm.featurizer.parameters())
    keys = [k for k in terms if k != "nll"]
    assert keys
    for key in keys:
        grads = torch.autograd.grad(terms[key], params, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), key


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("HGP", {"detach_mean": False}),
        ("Hutchinson", {"share_probes": True, "n_probes": 10}),
        ("HessianDiag", {"expected_probes": 3, "share_probes": True}),
    ],
)
def test_identical_domains_give_zero_penalties(tiny, tiny_data, name, overrides, c):
    algorithm = tiny(name, num_classes=c, **overrides)
    x, y = tiny_data(num_classes=max(c, 2))[0]
    y = (y % 2).double() if c == 1 else y
    terms = algorithm.objective_terms([(x, y), (x, y)])
    for key, value in terms.items():
        if key != "nll":
            assert abs(value.item()) < 1e-12, key


def test_hutchinson_independent_probes_leave_only_probe_noise(tiny, tiny_data):
    algorithm = tiny("Hutchinson", n_probes=10)
    x, y = tiny_data()[0]
    terms = algorithm.objective_terms([(x, y), (x, y)])
    assert terms["grad_penalty"].item() < 1e-20
    assert terms["hess_penalty"].item() > 0


@pytest.mark.parametrize("dataset", ["Debug28", "ColoredMNIST"])
def test_cmnist_script_options_and_one_logit_head_train(small_datasets, batches, dataset):
    """The CMNIST scripts' form (no detach, sum over envs) with a 1-logit BCE head, on the
    small datasets' images (labels reduced to {0, 1} floats)."""
    data = small_datasets[dataset]
    for name in NAMES:
        hparams = default_hparams(name, dataset)
        hparams.update(backbone="mlp", mlp_width=16, detach_mean=False, reduction="sum")
        hparams.update({"n_probes": 8} if name == "Hutchinson" else {})
        torch.manual_seed(0)
        algorithm = algorithms.get(name)(data.input_shape, 1, 2, hparams)
        for step in range(2):
            mbs = [(x, (y % 2).float()) for x, y in batches(data, (0, 1), start=step)]
            logs = algorithm.update(mbs)
            assert {"loss", "nll", "hess_penalty", "grad_penalty"} <= set(logs)
            assert all(math.isfinite(v) for v in logs.values()), (name, logs)


@pytest.mark.parametrize("name", NAMES)
def test_annealing_switches_penalties_on_and_recreates_adam(tiny, tiny_data, name):
    algorithm = tiny(
        name, penalty_anneal_iters=2, **({"n_probes": 5} if name == "Hutchinson" else {})
    )
    data = tiny_data()
    first = algorithm.optimizer
    for _ in range(2):
        assert set(algorithm.update(data)) == {"loss", "nll"}
        assert algorithm.optimizer is first
    logs = algorithm.update(data)
    assert algorithm.optimizer is not first
    assert {"hess_penalty", "grad_penalty"} <= set(logs)
    assert logs["loss"] > logs["nll"]


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("Hutchinson", {"n_probes": 7, "share_probes": True, "penalty_anneal_iters": 2}),
        ("HessianDiag", {"expected_probes": 4, "detach_mean": False}),
    ],
)
def test_resume_through_a_weights_only_checkpoint_is_exact(tiny, tiny_data, name, overrides):
    original = tiny(name, **overrides)
    for seed in (1, 2):
        original.update(tiny_data(seed=seed))
    buffer = io.BytesIO()
    torch.save({"model": original.state_dict(), "extra": original.extra_state()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = tiny(name, **overrides)
    resumed.load_state_dict(state["model"])
    resumed.load_extra_state(state["extra"])
    rng = torch.get_rng_state()
    logs = original.update(tiny_data(seed=3))
    torch.set_rng_state(rng)
    assert resumed.update(tiny_data(seed=3)) == logs
    for key, value in original.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_hyperparameters_and_their_sources():
    hgp = default_hparams("HGP", "PACS")
    assert (hgp["alpha"], hgp["beta"], hgp["penalty_anneal_iters"]) == (1e-4, 5e-3, 0)
    hut = default_hparams("Hutchinson", "PACS")
    assert hut["n_probes"] == 300 and hut["detach_mean"] and hut["reduction"] == "mean"
    assert 10 <= hut["alpha"] <= 1e4 and 1e2 <= hut["beta"] <= 1e6
    assert default_hparams("HessianDiag", "PACS")["expected_probes"] == 0
    for seed in range(1, 6):
        draw = random_hparams("Hutchinson", "PACS", seed)
        assert 10 <= draw["alpha"] <= 1e4 and 1e2 <= draw["beta"] <= 1e6
        draw = random_hparams("HGP", "PACS", seed)
        assert 1e-5 <= draw["alpha"] <= 1e-3 and 1e-3 <= draw["beta"] <= 1e-1
    assert "paper" in algorithms.get("Hutchinson").__doc__


def test_bad_options_raise_config_errors(tiny):
    with pytest.raises(ConfigError, match="reduction"):
        tiny("HGP", reduction="max")
    with pytest.raises(ConfigError, match="linear head"):
        tiny("HessianDiag", nonlinear_classifier=True)
