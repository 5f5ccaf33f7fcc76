"""RSC's muting fractions, SelfReg's same-class penalty, SD's squared-logit penalty."""

import pytest
import torch
import torch.nn.functional as F

from dgalign.algorithms.regularization import (
    keep_below_quantile,
    same_class_permutation,
    selfreg_penalty,
)


@pytest.mark.parametrize("drop", [0.1, 1 / 3, 0.5])
def test_rsc_quantile_mask_drops_the_largest_fraction(drop):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(4, 120, generator=g)
    mask = keep_below_quantile(values, drop, dim=1)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    dropped = (mask == 0).sum(1)
    assert torch.all((dropped - drop * 120).abs() <= 1)
    for row, m in zip(values, mask, strict=True):
        assert row[m == 0].min() > row[m == 1].max()  # the dropped ones are the largest


def test_rsc_feature_mask_challenges_the_expected_fractions(tiny, tiny_data):
    algorithm = tiny("RSC", mlp_width=60, rsc_f_drop_factor=0.25, rsc_b_drop_factor=0.5)
    data = tiny_data(n=20)
    x = torch.cat([x for x, _ in data])
    y = torch.cat([y for _, y in data])
    z = algorithm.featurizer(x)
    mask = algorithm.feature_mask(z, y)
    challenged = (mask == 0).any(1)
    assert abs(challenged.float().mean().item() - 0.5) <= 1 / 40 + 1e-9
    muted_per_sample = (mask[challenged] == 0).float().mean(1)
    assert torch.all((muted_per_sample - 0.25).abs() <= 1 / 60 + 1e-9)
    logs = algorithm.update(data)
    assert 0 < logs["muted_fraction"] < 0.25


def test_same_class_permutation_stays_within_classes():
    torch.manual_seed(0)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2])
    idx = same_class_permutation(y)
    assert torch.equal(y[idx], y)
    assert sorted(idx.tolist()) == list(range(8))


def test_selfreg_penalty_is_zero_for_consistent_classes():
    y = torch.tensor([0, 0, 1, 1])
    logits = F.one_hot(y, 2).double() * 3
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, generator=g, dtype=torch.float64)[y]  # equal within a class
    idx_a, idx_b = torch.tensor([1, 0, 3, 2]), torch.tensor([0, 1, 2, 3])
    assert selfreg_penalty(logits, features, features, idx_a, idx_b, lam=0.3).item() < 1e-28
    assert selfreg_penalty(logits, features, 2 * features, idx_a, idx_b, lam=0.3).item() > 0


def test_selfreg_penalty_hand_example():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    features = torch.ones(2, 2, dtype=torch.float64)
    projected = torch.zeros(2, 2, dtype=torch.float64)
    swap = torch.tensor([1, 0])
    # Partners are swapped in both draws: each term is MSE(o, o_swapped) + 0.3 MSE(z, 0) = 1.3.
    penalty = selfreg_penalty(logits, features, projected, swap, swap, lam=0.4)
    torch.testing.assert_close(penalty.item(), 1.3)
    # With the second partner being the sample itself, the mixed logit target is halfway.
    stay = torch.tensor([0, 1])
    penalty = selfreg_penalty(logits, features, projected, swap, stay, lam=0.5)
    torch.testing.assert_close(penalty.item(), 0.5 * 1.3 + 0.5 * (0.25 + 0.3))


def test_selfreg_trains_its_projection(tiny, tiny_data):
    algorithm = tiny("SelfReg")
    before = [p.detach().clone() for p in algorithm.projection.parameters()]
    algorithm.update(tiny_data())
    after = list(algorithm.projection.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_sd_penalty_is_the_mean_squared_logit(tiny, tiny_data):
    algorithm = tiny("SD", sd_reg=0.3)
    data = tiny_data()
    x = torch.cat([x for x, _ in data])
    y = torch.cat([y for _, y in data])
    with torch.no_grad():
        logits = algorithm.predict(x)
    logs = algorithm.update(data)
    torch.testing.assert_close(float(logs["penalty"]), logits.pow(2).mean().item())
    torch.testing.assert_close(float(logs["nll"]), F.cross_entropy(logits, y).item())
    torch.testing.assert_close(logs["loss"], logs["nll"] + 0.3 * logs["penalty"])
    with torch.no_grad():
        for p in algorithm.classifier.parameters():
            p.zero_()
    assert algorithm.update(data)["penalty"] == 0.0
