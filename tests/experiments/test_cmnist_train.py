"""Training restarts as one batch gives each restart's solo result; the weight schedule."""

import pytest
import torch

from dgalign.experiments.cmnist_model import init_restart
from dgalign.experiments.cmnist_rows import ABLATIONS, METHODS
from dgalign.experiments.cmnist_train import Protocol, train_restarts

from .conftest import synthetic_restart

TINY = Protocol(steps=5, anneal_iters=2, penalty_weight=50.0, lr=0.01, hidden=8)


def test_weight_schedule():
    proto = Protocol()
    assert [proto.weight(t) for t in (0, 189)] == [1.0, 1.0]
    assert proto.weight(190) == proto.weight(500) == 91257.18613115903


@pytest.mark.parametrize(
    "name",
    [
        "ERM",
        "IRM",
        "VREx",
        "Fishr",
        "HGP",
        "HessianDiag",
        "HessianDiag-E150",
        "CMA",
        "Hutchinson(alpha=0)",
    ],
)
def test_batched_restarts_equal_solo_runs(name):
    method = {**METHODS, **ABLATIONS}[name]
    data = [synthetic_restart(seed=s) for s in range(3)]
    gen = torch.Generator().manual_seed(0)
    inits = [init_restart(gen, hidden=TINY.hidden) for _ in data]
    kw = {"dtype": torch.float64, "progress": False, "dynamics_every": 2}
    batched = train_restarts(data, inits, method, TINY, **kw)
    for k in range(3):
        solo = train_restarts([data[k]], [inits[k]], method, TINY, **kw)
        for key, value in solo.states[0].items():
            assert torch.allclose(batched.states[k][key], value, rtol=1e-9, atol=1e-12), key
        a, b = batched.records[k], solo.records[0]
        assert a["final"] == pytest.approx(b["final"], rel=1e-9, abs=1e-12)
        assert a["dynamics"]["hessian_distance"] == pytest.approx(
            b["dynamics"]["hessian_distance"], rel=1e-7, abs=1e-12
        )


def test_records_hold_final_metrics_and_dynamics():
    data = [synthetic_restart()]
    inits = [init_restart(torch.Generator().manual_seed(0), hidden=TINY.hidden)]
    out = train_restarts(
        data, inits, METHODS["IRM"], TINY, dtype=torch.float64, progress=False, dynamics_every=2
    )
    rec = out.records[0]
    assert rec["dynamics"]["step"] == [0, 2, 4]
    assert len(rec["per_step"]["train_nll"]) == TINY.steps
    assert rec["final"]["train_acc"] == pytest.approx(
        (rec["final"]["env0_acc"] + rec["final"]["env1_acc"]) / 2
    )
    assert {"test_acc", "gray_acc", "test_loss", "hessian_distance"} <= set(rec["final"])
    assert len(out.step_times) == TINY.steps
    assert out.states[0]["w3"].shape == (1, TINY.hidden)


def test_body_backward_equals_autograd():
    from dgalign.experiments import cmnist_model as M

    gen = torch.Generator().manual_seed(0)
    params = M.stack_restarts([init_restart(gen, hidden=6) for _ in range(2)], torch.float64, "cpu")
    for p in params.values():
        p.data.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = torch.rand(2, 9, 392, generator=gen, dtype=torch.float64)
    z = M.features(params, x)
    dz = torch.randn(z.shape, generator=gen, dtype=torch.float64)
    (z * dz).sum().backward()
    expected = {k: params[k].grad.clone() for k in ("w1", "b1", "w2", "b2")}
    for p in params.values():
        p.grad = None
    body = M.Body(x)
    assert torch.allclose(body.forward(params), z)
    body.backward(params, dz.clone())
    for k, v in expected.items():
        assert torch.allclose(params[k].grad, v), k
