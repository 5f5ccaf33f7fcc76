"""FGSM stays within eps and [0, 1]; the transferability attack stays inside the delta ball."""

import json

import pytest
import torch
from torch import nn

from dgalign.analysis.transferability import attack_head, project_
from dgalign.cli import main
from dgalign.experiments import cmnist_model as M
from dgalign.experiments.cmnist_model import bce, sign_accuracy
from dgalign.experiments.fgsm import fgsm_accuracy, fgsm_perturb
from dgalign.train import RunConfig, run_training


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3])
def test_fgsm_perturbation_bounded_and_clipped(eps):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 392, generator=g)
    x[:5] = 0.0
    x[5:10] = 1.0
    grad = torch.randn(50, 392, generator=g)
    adv = fgsm_perturb(x, grad, eps)
    assert float((adv - x).abs().max()) <= eps + 1e-7
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    inside = (x + eps * grad.sign() >= 0) & (x + eps * grad.sign() <= 1)
    assert torch.allclose((adv - x).abs()[inside], torch.full_like(x, eps)[inside], atol=1e-6)


def test_batched_fgsm_equals_per_model_fgsm():
    gen = torch.Generator().manual_seed(0)
    states = [M.init_restart(gen, hidden=8) for _ in range(2)]
    params = {k: v.detach() for k, v in M.stack_restarts(states, torch.float64, "cpu").items()}
    x = torch.rand(2, 40, 392, generator=gen, dtype=torch.float64)
    y = (torch.rand(2, 40, generator=gen) < 0.5).double()
    eps = [0.0, 0.1]
    batched = fgsm_accuracy(
        lambda inp: M.head(params, M.features(params, inp)),
        lambda lg, t: bce(lg, t).sum(),
        sign_accuracy,
        x,
        y,
        eps,
    )
    for k in range(2):
        model = M.RestartMLP(states[k]).double()
        solo = fgsm_accuracy(
            model,
            lambda lg, t: nn.functional.binary_cross_entropy_with_logits(lg[:, 0], t),
            lambda lg, t: sign_accuracy(lg[None], t[None])[0],
            x[k],
            y[k],
            eps,
        )
        for e in eps:
            assert float(batched[e][k]) == pytest.approx(float(solo[e]))
    assert float(batched[0.0].mean()) == pytest.approx(
        float(sign_accuracy(M.head(params, M.features(params, x)), y).mean())
    )


def _domains(seed=0, d=6, n=80):
    g = torch.Generator().manual_seed(seed)
    out = []
    for flip in (0.1, 0.3, 0.5):
        z = torch.randn(n, d, generator=g)
        y = (z[:, 0] > 0).long()
        noisy = torch.rand(n, generator=g) < flip
        out.append((z, torch.where(noisy, 1 - y, y)))
    return out[:2], out[2]


@pytest.mark.parametrize("classes", [1, 3])
def test_attack_stays_in_the_delta_ball(classes):
    sources, target = _domains()
    if classes == 3:
        sources = [(z, y % 3) for z, y in sources]
        target = (target[0], target[1] % 3)
    head = nn.Linear(6, classes)
    star = torch.cat([p.detach().reshape(-1) for p in head.parameters()])
    gaps = []
    for delta in (0.0, 0.1, 0.5, 2.0):
        res = attack_head(head, sources, target, delta, rounds=3, steps=10)
        assert res.distance <= delta + 1e-6
        gaps.append(res.gap)
    after = torch.cat([p.detach().reshape(-1) for p in head.parameters()])
    assert torch.equal(star, after)  # the model itself is not modified
    assert gaps[-1] > gaps[0]


def test_project_in_place():
    star = [torch.zeros(3), torch.zeros(1)]
    params = [torch.tensor([3.0, 0.0, 0.0]), torch.tensor([4.0])]
    assert project_(params, star, 1.0) == pytest.approx(1.0)
    assert torch.allclose(params[0], torch.tensor([0.6, 0.0, 0.0]))
    assert torch.allclose(params[1], torch.tensor([0.8]))


def test_transferability_on_a_domainbed_run_dir(tmp_path, fast_hparams, capsys):
    run_dir = tmp_path / "run"
    config = RunConfig(
        dataset="Spurious28",
        algorithm="ERM",
        output_dir=str(run_dir),
        test_envs=[2],
        hparams=fast_hparams,
        steps=3,
        checkpoint_freq=3,
    )
    run_training(config, progress=False)
    code = main(
        [
            "analyze",
            "transferability",
            str(run_dir),
            "--deltas",
            "0",
            "0.5",
            "--rounds",
            "2",
            "--steps",
            "5",
            "--max-samples",
            "0",
        ]
    )
    assert code == 0
    result = json.loads((run_dir / "transferability.json").read_text())
    assert result["deltas"] == [0.0, 0.5]
    assert len(result["ERM (env2)"]["mean"]) == 2
    assert (run_dir / "transferability.png").stat().st_size > 0
    assert "ERM (env2), ||theta*||" in capsys.readouterr().out
