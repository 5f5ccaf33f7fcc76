"""`dgalign.losses`: the drop-in penalties equal the registered algorithms' penalties (values
and gradients, float64) and default to their hyper-parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgalign import algorithms, losses
from dgalign.algorithms.feature_alignment import coral_discrepancy
from dgalign.errors import ConfigError

D, C = 5, 3
COUNTS = (7, 6, 8)


def problem(seed: int = 0, classes: int = C):
    gen = torch.Generator().manual_seed(seed)
    zs = [torch.randn(n, D, generator=gen, dtype=torch.float64) for n in COUNTS]
    ys = [torch.randint(0, classes, (n,), generator=gen) for n in COUNTS]
    head = nn.Linear(D, classes).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(classes, D, generator=gen, dtype=torch.float64))
        head.bias.copy_(torch.randn(classes, generator=gen, dtype=torch.float64))
    return zs, ys, head


def algorithm_penalty(name: str, zs, ys, head, seed: int, **overrides) -> torch.Tensor:
    """What the registered algorithm adds to its loss after the warm-up: built as in training
    (its hyper-parameter space's defaults), its classifier replaced by `head`."""
    cls = algorithms.get(name)
    hparams = {
        "lr": 1e-3, "weight_decay": 0.0, "nonlinear_classifier": False, "backbone": "mlp",
        "mlp_width": D, "mlp_depth": 2, "mlp_dropout": 0.0,
        **{h.name: h.default for h in cls.hparam_space("Debug28")},
        **overrides,
    }  # fmt: skip
    alg = cls((D,), head.out_features, len(COUNTS), hparams).double()
    alg.classifier = head
    torch.manual_seed(seed)  # probes drawn from here on, as on the module's side
    z, y, counts = torch.cat(zs), torch.cat(ys), [len(t) for t in ys]
    scale = cls.penalty_schedule(alg.hparams).after
    if hasattr(cls, "logit_penalty"):
        return scale * cls.logit_penalty(head(z), y, counts, alg.hparams)
    _, terms = alg.penalties(z, y, counts) if hasattr(alg, "penalties") else (None, None)
    if terms is None:
        _, terms = cls.head_penalties(z, head.weight, head.bias, y, counts, alg.hparams)
    return scale * alg.weighted_penalty(terms)


CASES = [
    ("HGP", lambda **k: losses.HessianAlignment("hgp", **k), {}),
    ("Hutchinson", lambda **k: losses.HessianAlignment("hutchinson", **k), {"n_probes": 4}),
    ("HessianDiag", lambda **k: losses.HessianAlignment("diag", **k), {}),
    ("HessianDiag", lambda **k: losses.HessianAlignment("expected", **k), {"expected_probes": 3}),
    ("CMA", lambda **k: losses.CMA(**k), {}),
    ("Fishr", lambda **k: losses.Fishr(**k), {}),
    ("IRM", lambda **k: losses.IRM(**k), {}),
    ("VREx", lambda **k: losses.VREx(**k), {}),
]


@pytest.mark.parametrize(("name", "make", "overrides"), CASES)
def test_values_and_gradients_equal_the_algorithms(name, make, overrides):
    zs, ys, head = problem()
    zs = [z.requires_grad_() for z in zs]
    module = make(**overrides)
    torch.manual_seed(3)  # Hutchinson draws probes: the same draws on both sides
    if isinstance(module, losses.IRM | losses.VREx):
        ours, terms = module([head(z) for z in zs], ys)
    else:
        ours, terms = module(zs, ys, head)
    reference = algorithm_penalty(name, zs, ys, head, 3, **overrides)
    assert ours.dtype == torch.float64 and set(terms) and ours.item() != 0.0
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-14)
    params = [*zs, head.weight, head.bias]
    g_ours = torch.autograd.grad(ours, params, retain_graph=True)
    g_ref = torch.autograd.grad(reference, params)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_defaults_come_from_the_algorithms():
    for module, name in [
        (losses.HessianAlignment("hgp"), "HGP"),
        (losses.HessianAlignment("hutchinson"), "Hutchinson"),
        (losses.CMA(), "CMA"),
        (losses.Fishr(), "Fishr"),
        (losses.IRM(), "IRM"),
        (losses.VREx(), "VREx"),
        (losses.CORAL(), "CORAL"),
    ]:
        assert module.hparams == {h.name: h.default for h in algorithms.get(name).HPARAMS}
    expected = losses.HessianAlignment("expected")
    n_probes = {h.name: h.default for h in algorithms.get("Hutchinson").HPARAMS}["n_probes"]
    assert expected.hparams["expected_probes"] == n_probes


def test_aliases_and_bad_arguments():
    assert losses.HessianAlignment("hgp", alpha=2.0, beta=3.0).hparams["hess_weight"] == 2.0
    with pytest.raises(ConfigError, match="unknown hyper-parameter"):
        losses.IRM(nope=1)
    with pytest.raises(ConfigError, match="kind must be one of hgp, hutchinson"):
        losses.HessianAlignment("full")
    zs, ys, head = problem()
    with pytest.raises(ConfigError, match="one tensor per domain"):
        losses.Fishr()(torch.cat(zs), torch.cat(ys), head)
    with pytest.raises(ConfigError, match=r"needs an nn\.Linear head"):
        losses.CMA()(zs, ys, nn.Sequential(head))


def test_hgp_closed_form_equals_autograd_over_a_general_head():
    """The nn.Linear path (closed forms) against the path of any head (autograd)."""
    zs, ys, head = problem(1)
    zs = [z.requires_grad_() for z in zs]
    align = losses.HessianAlignment("hgp")
    closed, _ = align(zs, ys, head)
    general, _ = align(zs, ys, nn.Sequential(head))
    torch.testing.assert_close(closed, general, rtol=1e-10, atol=1e-14)
    for a, b in zip(
        torch.autograd.grad(closed, zs, retain_graph=True),
        torch.autograd.grad(general, zs),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_coral_equals_the_pairwise_mean():
    zs, _, _ = problem(2)
    zs = [z.requires_grad_() for z in zs]
    ours, terms = losses.CORAL(mmd_gamma=0.5)(zs)
    assert set(terms) == {"penalty"}
    pairs = [coral_discrepancy(zs[i], zs[j]) for i in range(3) for j in range(i + 1, 3)]
    reference = 0.5 * torch.stack(pairs).mean()
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=0)
    for a, b in zip(
        torch.autograd.grad(ours, zs, retain_graph=True),
        torch.autograd.grad(reference, zs),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
