"""HGP, Hutchinson, HessianDiag: penalties against explicit autograd Hessians (float64), the
expected-probes closed form against Monte Carlo, gradients to the featurizer, annealing,
1-logit heads and resume fidelity."""

from __future__ import annotations

import io
import logging
import math

import numpy as np
import pytest
import torch
from tests.curvature.helpers import explicit, make_domains, split_params

from dgalign import algorithms
from dgalign.algorithms.hessian import alignment_form
from dgalign.algorithms.spaces import default_hparams, random_hparams, resolve_hparams
from dgalign.curvature import penalties
from dgalign.curvature.penalties import Form
from dgalign.errors import ConfigError

NAMES = ("HGP", "Hutchinson", "HessianDiag")
F64 = torch.float64


def make_head(c: int, d: int, ns: tuple[int, ...], seed: int = 0):
    """Weight [C, d], bias [C] (leaves), pooled features (shifted by 0.4 per domain, requiring
    grad) and labels; float64."""
    w, zs, ys = make_domains(c, d, ns, seed, shift=0.4)
    weight, bias = split_params(w)
    return weight, bias, torch.cat(zs).requires_grad_(), torch.cat(ys), list(ns)


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
@pytest.mark.parametrize(("name", "kind"), [("HGP", "hgp"), ("HessianDiag", "diag")])
def test_default_penalties_match_explicit_hessians(c, name, kind):
    """DomainBed's form (pooled mean, detached, mean over domains) against explicit Hessians."""
    w, zs, ys = make_domains(c, 4, (6, 9), 1, shift=0.4)
    weight, bias = split_params(w)
    hp = default_hparams(name, "PACS")
    _, terms = algorithms.get(name).head_penalties(
        torch.cat(zs), weight, bias, torch.cat(ys), [6, 9], hp
    )
    want = explicit_penalties(w, zs, ys, kind)
    torch.testing.assert_close(terms["hess_penalty"], want[0])
    torch.testing.assert_close(terms["grad_penalty"], want[1])


@pytest.mark.parametrize("c", [1, 3])
def test_hutchinson_with_many_probes_approaches_the_exact_diagonal(c):
    w, zs, ys = make_domains(c, 3, (8, 8), 2, shift=0.4)
    weight, bias = split_params(w)
    hp = {**default_hparams("Hutchinson", "PACS"), "n_probes": 20000}
    torch.manual_seed(0)
    _, got = algorithms.get("Hutchinson").head_penalties(
        torch.cat(zs), weight, bias, torch.cat(ys), [8, 8], hp
    )
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
    weight, bias, z, y, ns = make_head(c, 2, (5, 7), seed=3)
    form = Form("pooled", detach, "mean")
    torch.manual_seed(1)
    values, grads = [], []
    for _ in range(reps):
        _, terms = penalties.hutchinson_alignment(z, weight, bias, y, ns, form, m, share)
        values.append(terms["hess_penalty"].detach())
        grads.append(torch.autograd.grad(terms["hess_penalty"], z)[0].reshape(-1))
    _, closed = penalties.expected_probe_variance(z, weight, bias, y, ns, m, form, share)
    total = closed["hess_penalty"] + closed["probe_variance"]
    closed_grad = torch.autograd.grad(total, z)[0].reshape(-1)
    values, grads = torch.stack(values), torch.stack(grads)
    assert abs(values.mean() - total) < 4.5 * values.std() / math.sqrt(reps)
    err = (grads.mean(0) - closed_grad).abs()
    assert (err < 4.5 * grads.std(0) / math.sqrt(reps) + 1e-12).all()


@pytest.mark.parametrize("name", ["HGP", "Hutchinson"])
def test_nonlinear_head_path_equals_the_closed_form_on_a_linear_head(tiny, tiny_data, name):
    """The autograd fallback (any head) and the closed form agree on the same linear head:
    exactly for HGP; for Hutchinson (independent probe draws) both have the expectation of
    HessianDiag with expected probes (means of 16 draws within 4.5 standard errors)."""
    over = {"n_probes": 50} if name == "Hutchinson" else {}
    for form in ({}, {"detach_mean": False, "mean_term": "envs", "reduction": "sum"}):
        algorithm = tiny(name, **over, **form)
        x = [xb for xb, _ in tiny_data()]
        y = torch.cat([yb for _, yb in tiny_data()])
        z = algorithm.featurizer(torch.cat(x))
        _, fast = algorithm.penalties(z, y, [8, 8])
        _, slow = algorithm.nonlinear_penalties(z, y, [8, 8])
        torch.testing.assert_close(fast["grad_penalty"], slow["grad_penalty"])
        if name == "HGP":
            torch.testing.assert_close(fast["hess_penalty"], slow["hess_penalty"])
            continue
        head = algorithm.classifier
        form_ = alignment_form(algorithm.hparams)
        _, e = penalties.expected_probe_variance(z, head.weight, head.bias, y, [8, 8], 50, form_)
        expected = float((e["hess_penalty"] + e["probe_variance"]).detach())
        for fn in (algorithm.penalties, algorithm.nonlinear_penalties):
            draws = torch.tensor(
                [float(fn(z, y, [8, 8])[1]["hess_penalty"].detach()) for _ in range(16)]
            )
            assert abs(float(draws.mean()) - expected) < 4.5 * float(draws.std()) / 4


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


@pytest.mark.parametrize("dataset", ["Spurious28", "ColoredMNIST"])
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
    assert (hgp["hess_weight"], hgp["grad_weight"], hgp["penalty_anneal_iters"]) == (1e-4, 5e-3, 0)
    hut = default_hparams("Hutchinson", "PACS")
    assert hut["n_probes"] == 300 and hut["detach_mean"] and hut["reduction"] == "mean"
    assert hut["mean_term"] == "pooled"
    assert 10 <= hut["hess_weight"] <= 1e4 and 1e2 <= hut["grad_weight"] <= 1e6
    assert default_hparams("HessianDiag", "PACS")["expected_probes"] == 0
    for seed in range(1, 6):
        draw = random_hparams("Hutchinson", "PACS", seed)
        assert 10 <= draw["hess_weight"] <= 1e4 and 1e2 <= draw["grad_weight"] <= 1e6
        draw = random_hparams("HGP", "PACS", seed)
        assert 1e-5 <= draw["hess_weight"] <= 1e-3 and 1e-3 <= draw["grad_weight"] <= 1e-1
    assert "paper" in algorithms.get("Hutchinson").__doc__


@pytest.mark.parametrize("share", [False, True])
def test_expected_probes_is_curv_weight_hess_weight_over_m(share):
    """expected_probes = m weighs the same term as curv_weight = hess_weight / m: the weighted
    penalties and their gradients agree, and both equal the m-probe expectation."""
    weight, bias, z, y, ns = make_head(3, 2, (5, 7), seed=4)
    cls = algorithms.get("HessianDiag")
    base = {**default_hparams("HessianDiag", "PACS"), "hess_weight": 2.0, "share_probes": share}
    totals = []
    for over in ({"expected_probes": 150}, {"curv_weight": 2.0 / 150}):
        hp = {**base, **over}
        _, terms = cls.head_penalties(z, weight, bias, y, ns, hp)
        wts = cls.term_weights(hp, 3)
        totals.append(sum(wts[k] * v for k, v in terms.items()))
    _, e = penalties.expected_probe_variance(z, weight, bias, y, ns, 150, alignment_form(base))
    if not share:
        want = (
            2.0 * (e["hess_penalty"] + e["probe_variance"])
            + base["grad_weight"] * e["grad_penalty"]
        )
        torch.testing.assert_close(totals[0], want)
    torch.testing.assert_close(totals[0], totals[1])
    g0, g1 = (torch.autograd.grad(t, (z, weight, bias)) for t in totals)
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(a, b)


def test_curv_weight_is_its_own_term_and_refuses_both_settings():
    weight, bias, z, y, ns = make_head(1, 2, (5, 7), seed=2)
    cls = algorithms.get("HessianDiag")
    hp = default_hparams("HessianDiag", "PACS")
    assert hp["curv_weight"] == 0.0
    _, off = cls.head_penalties(z, weight, bias, y, ns, hp)
    _, on = cls.head_penalties(z, weight, bias, y, ns, {**hp, "curv_weight": 1.0})
    assert set(off) == {"hess_penalty", "grad_penalty"}
    assert float(on["curv_penalty"].detach()) > 0
    torch.testing.assert_close(on["hess_penalty"], off["hess_penalty"])
    with pytest.raises(ConfigError, match="one of them"):
        cls.head_penalties(z, weight, bias, y, ns, {**hp, "expected_probes": 150, "curv_weight": 1})
    draws = [random_hparams("HessianDiag", "PACS", s)["curv_weight"] for s in range(1, 41)]
    assert 0.0 in draws and max(draws) > 300 / 150 * 10  # off, and well past the 150-probe point
    assert all(d == 0.0 or 1e-2 <= d <= 1e3 for d in draws)


def test_renamed_weights_keep_their_draws_and_old_names(caplog):
    """hess_weight / grad_weight are drawn as alpha / beta were (same seeded RandomState), and
    the old names still work in --hparams with a one-line notice."""
    from dgalign.utils.seeding import seed_hash

    draw = random_hparams("HGP", "PACS", 3)
    rng = np.random.RandomState(seed_hash(3, "alpha"))
    assert draw["hess_weight"] == pytest.approx(10 ** rng.uniform(-5, -3))
    with caplog.at_level(logging.WARNING, logger="dgalign"):
        hp = resolve_hparams("HessianDiag", "PACS", overrides='{"alpha": 2.0, "beta": 3.0}')
    assert (hp["hess_weight"], hp["grad_weight"]) == (2.0, 3.0)
    assert "alpha" not in hp and "beta" not in hp
    notes = [r.getMessage() for r in caplog.records if "now called" in r.getMessage()]
    assert any("alpha" in n and "hess_weight" in n for n in notes)
    assert all("\n" not in n for n in notes)
    with pytest.raises(ConfigError, match="same one"):
        resolve_hparams("HGP", "PACS", overrides='{"alpha": 2.0, "hess_weight": 3.0}')


def test_bad_options_raise_config_errors(tiny):
    with pytest.raises(ConfigError, match="one of them"):
        tiny("HessianDiag", expected_probes=150, curv_weight=0.1)
    with pytest.raises(ConfigError, match="reduction"):
        tiny("HGP", reduction="max")
    with pytest.raises(ConfigError, match="mean_term"):
        tiny("Hutchinson", mean_term="median")
    with pytest.raises(ConfigError, match="linear head"):
        tiny("HessianDiag", nonlinear_classifier=True)
