"""FGMix: the mixing weights, class-aware tuples, flatness loss, which step moves which
parameters, the ablation variants on synthetic MNIST pools, and exact resume on the mixup
path (start_step = 0, which the registry-wide contract test does not reach)."""

from __future__ import annotations

import io
import math

import pytest
import torch

from dgalign import algorithms
from dgalign.algorithms.fgmix import VARIANTS, default_start_step
from dgalign.algorithms.fgmix_policy import (
    CompatibilityScore,
    dirichlet_weights,
    flatness_gap,
    gather,
    masked_softmax,
    plan_mixes,
    scale_shift,
)
from dgalign.algorithms.spaces import default_hparams
from dgalign.data import ColoredMNIST, RotatedMNIST
from dgalign.errors import ConfigError

from .conftest import check_logs


def _mask(m: int = 6, k: int = 4) -> torch.Tensor:
    mask = torch.ones(m, k, dtype=torch.bool)
    mask[0, 3] = mask[1, 0] = mask[2, 1] = mask[2, 2] = False  # mixes over 3, 3 and 2 domains
    return mask


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0, 8.0, -2.0])
def test_weights_sum_to_one_for_any_tau(tau):
    torch.manual_seed(0)
    mask = _mask()
    weights = scale_shift(masked_softmax(3 * torch.randn(mask.shape), mask), tau, mask)
    torch.testing.assert_close(weights.sum(1), torch.ones(len(mask)))
    assert (weights[~mask] == 0).all()


def test_tau_one_gives_only_interpolations():
    torch.manual_seed(0)
    mask = _mask()
    weights = scale_shift(masked_softmax(10 * torch.randn(mask.shape), mask), 1.0, mask)
    assert (weights >= 0).all()


def test_tau_above_one_extrapolates_when_scores_are_peaked():
    mask = torch.ones(2, 3, dtype=torch.bool)
    peaked = torch.tensor([[8.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # one peaked mix, one uniform
    weights = scale_shift(masked_softmax(peaked, mask), 3.0, mask)
    assert (weights[0, 1:] < 0).all() and weights[0, 0] > 1  # extrapolation beyond z_0
    torch.testing.assert_close(weights[1], torch.full((3,), 1 / 3))  # uniform stays uniform
    # tau = 1 on the same peaked scores: no negative weight.
    assert (scale_shift(masked_softmax(peaked, mask), 1.0, mask) >= 0).all()


def test_dirichlet_weights_are_random_interpolations():
    torch.manual_seed(0)
    mask = _mask()
    weights = dirichlet_weights(mask, 1.0)
    torch.testing.assert_close(weights.sum(1), torch.ones(len(mask), dtype=torch.float64))
    assert (weights >= 0).all() and (weights[~mask] == 0).all()


def test_mixes_take_same_class_examples_and_handle_missing_classes():
    labels = [torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2]), torch.tensor([0, 1, 1, 1])]
    torch.manual_seed(0)
    plan = plan_mixes(labels, 64)
    for k, y_k in enumerate(labels):
        chosen = y_k[plan.index[:, k]]
        assert (chosen[plan.mask[:, k]] == plan.y[plan.mask[:, k]]).all()
    assert (plan.mask.sum(1) >= 2).all()
    assert not plan.mask[plan.y == 2, 2].any()  # domain 2 has no class 2: left out
    assert (plan.y == 2).any()  # ... but class 2 is still mixed over domains 0 and 1
    skip = plan_mixes(labels, 64, missing="skip")
    assert set(skip.y.tolist()) <= {0, 1} and skip.mask.all()
    assert plan_mixes([torch.tensor([0, 1])], 8) is None  # one domain: nothing to mix
    lone = plan_mixes([torch.tensor([0]), torch.tensor([1])], 8, num_classes=2)
    assert (lone.mask.sum(1) == 1).all()  # no shared class: each "mix" is one example


def test_mix_anchors_are_uniform_over_the_eligible_examples():
    """Classes come in proportion to the pooled batch: here class 0 (3 of the 5 eligible
    examples) and class 1 (2); class 2 is in one domain only and never drawn."""
    labels = [torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1])]
    torch.manual_seed(0)
    y = plan_mixes(labels, 20000, num_classes=3).y
    assert not (y == 2).any()
    assert abs(float((y == 0).float().mean()) - 0.6) < 0.02


def test_score_network_is_the_mlp_of_the_ordered_concatenation():
    torch.manual_seed(0)
    net = CompatibilityScore(5, tau_init=3.0, normalize=False).double()
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    pairs = net.pair_scores(x)
    for k in range(3):
        for j in range(3):
            concat = torch.cat([x[:, k], x[:, j]], 1)
            expected = net.rest(net.first(concat)).squeeze(-1)
            torch.testing.assert_close(pairs[:, k, j], expected)
    assert not torch.allclose(pairs, pairs.transpose(1, 2))  # asymmetric
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[0, 2] = False
    scores = net(x, mask)
    torch.testing.assert_close(scores[0, 0], pairs[0, 0, 1])  # only present j != k count


def test_flatness_is_zero_for_a_constant_loss_and_grows_with_rho_for_a_quadratic():
    torch.manual_seed(0)
    params = {"w": torch.zeros(3, 4, dtype=torch.float64), "b": torch.zeros(3, dtype=torch.float64)}

    def constant(p):
        return torch.tensor(2.0, dtype=torch.float64) + 0 * p["w"].sum()

    def quadratic(p):
        return (p["w"] ** 2).sum() + (p["b"] ** 2).sum()

    assert flatness_gap(constant, params, 0.7, 10).item() == 0.0
    gaps = [flatness_gap(quadratic, params, rho, 10).item() for rho in (0.1, 0.5, 1.0, 2.0)]
    torch.testing.assert_close(gaps, [0.01, 0.25, 1.0, 4.0])
    shifted = {k: v + 1.0 for k, v in params.items()}  # E_u[2 rho theta.u + rho^2] = rho^2
    estimate = flatness_gap(quadratic, shifted, 0.5, 4000).item()
    assert abs(estimate - 0.25) < 0.1


def _fgmix(tiny, **overrides):
    hparams = dict(start_step=0, mixup_batch=8, n_directions=5)
    hparams.update(overrides)
    return tiny("FGMix", num_domains=3, **hparams)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _pieces(algorithm, data):
    from dgalign.algorithms._common import concat

    x, y = concat(data)
    z = algorithm.featurizer(x)
    logits = algorithm.classifier(z)
    plan = plan_mixes([yk for _, yk in data], 8)
    split = [len(yk) for _, yk in data]
    codes = gather(list(z.split(split)), plan)
    inputs = gather(list(algorithm.head_gradients(z, logits, y).split(split)), plan)
    return z, y, codes, plan, algorithm.mix_weights(inputs, plan.mask)


def test_policy_step_moves_only_the_policy(tiny, tiny_data):
    algorithm = _fgmix(tiny)
    z, y, codes, plan, weights = _pieces(algorithm, tiny_data(num_domains=3))
    others = {n: _snapshot(getattr(algorithm, n)) for n in ("featurizer", "classifier")}
    others["discriminator"] = _snapshot(algorithm.discriminator)
    policy = _snapshot(algorithm.policy)
    logs, mixed = algorithm.policy_step(z, y, codes, plan, weights)
    assert logs["policy_loss"] != 0.0 and math.isfinite(logs["adv_loss"])
    assert not mixed.requires_grad
    for name, before in others.items():
        module = getattr(algorithm, name)
        assert all(p.grad is None for p in module.parameters()), name
        for key, value in module.state_dict().items():
            assert torch.equal(value, before[key]), f"{name}.{key} moved"
    moved = [k for k, v in algorithm.policy.state_dict().items() if not torch.equal(v, policy[k])]
    assert "tau" in moved and len(moved) == len(policy)


def test_discriminator_step_moves_only_the_discriminator(tiny, tiny_data):
    algorithm = _fgmix(tiny)
    mixed = torch.randn(8, algorithm.featurizer.n_outputs, dtype=torch.float64)
    before = _snapshot(algorithm)
    algorithm.discriminator_step(mixed)
    changed = {
        k.split(".")[0] for k, v in algorithm.state_dict().items() if not torch.equal(v, before[k])
    }
    assert changed == {"discriminator"}
    for name in ("featurizer", "classifier", "policy"):
        assert all(p.grad is None for p in getattr(algorithm, name).parameters()), name


def _pool(n: int = 216):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (n,), generator=g),
    )


@pytest.fixture(scope="module")
def synthetic_mnist():
    state = torch.get_rng_state()
    torch.manual_seed(0)
    try:
        return {
            "RotatedMNIST": RotatedMNIST(pool=_pool()),
            "ColoredMNIST": ColoredMNIST(pool=_pool()),
        }
    finally:
        torch.set_rng_state(state)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dataset", ["RotatedMNIST", "ColoredMNIST"])
def test_each_variant_trains_on_synthetic_mnist(variant, dataset, synthetic_mnist):
    data = synthetic_mnist[dataset]
    hparams = default_hparams("FGMix", dataset)
    hparams.update(backbone="mlp", mlp_width=16, variant=variant, start_step=0, n_directions=8)
    hparams.update(mixup_batch=8, tau_init=5.0)
    torch.manual_seed(0)
    algorithm = algorithms.get("FGMix")(data.input_shape, data.num_classes, 3, hparams)
    for step in range(3):
        window = slice(8 * step, 8 * step + 8)
        logs = algorithm.update([(data[e].x[window], data[e].y[window]) for e in (0, 1, 2)])
        check_logs(logs)
    assert logs["mix_loss"] > 0
    assert logs["tau"] == {"A": 1.0, "B": 1.0, "C": 1.0, "D": 5.0}.get(variant, logs["tau"])
    assert (logs["policy_loss"] != 0.0) == (variant in ("E", "F", "full"))
    assert (logs["disc_loss"] != 0.0) == (variant in ("F", "full"))


def test_mixup_waits_for_start_step(tiny, tiny_data):
    algorithm = _fgmix(tiny, start_step=2)
    logs = [algorithm.update(tiny_data(num_domains=3, seed=s)) for s in range(3)]
    assert [entry["mix_loss"] > 0 for entry in logs] == [False, False, True]


def test_nonlinear_head_uses_autograd_per_sample_gradients(tiny, tiny_data):
    algorithm = _fgmix(tiny, nonlinear_classifier=True, mlp_width=8)
    logs = algorithm.update(tiny_data(num_domains=3))
    assert logs["mix_loss"] > 0 and math.isfinite(logs["policy_loss"])


def test_resume_is_exact_on_the_mixup_path(tiny, tiny_data):
    original = _fgmix(tiny)
    for seed in range(2):
        original.update(tiny_data(num_domains=3, seed=seed))
    buffer = io.BytesIO()
    torch.save({"model": original.state_dict(), "extra": original.extra_state()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(5)
    resumed = _fgmix(tiny)
    resumed.load_state_dict(state["model"])
    resumed.load_extra_state(state["extra"])
    rng = torch.get_rng_state()
    logs = original.update(tiny_data(num_domains=3, seed=9))
    torch.set_rng_state(rng)
    assert resumed.update(tiny_data(num_domains=3, seed=9)) == logs
    for key, value in original.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_start_step_is_three_fifths_of_the_dataset_schedule():
    assert default_hparams("FGMix", "RotatedMNIST")["start_step"] == 3000
    assert default_hparams("FGMix", "ColoredMNIST")["start_step"] == 3000
    assert default_start_step("DomainNet") == 9000
    assert default_start_step("PACS") == 3000


def test_unknown_variant_is_a_config_error(tiny):
    with pytest.raises(ConfigError, match="variant must be one of"):
        tiny("FGMix", variant="G")
