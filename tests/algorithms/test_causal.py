"""CausIRL: the penalty aligns two random mixtures of the domains, not pairs of domains."""

import torch

from dgalign.algorithms.causal import split_mixtures
from dgalign.algorithms.feature_alignment import coral_discrepancy, gaussian_mmd


def test_split_mixtures_cuts_each_domain_once():
    zs = [torch.arange(5.0)[:, None], 10 + torch.arange(4.0)[:, None]]
    torch.manual_seed(3)
    first, second = split_mixtures(zs)
    torch.manual_seed(3)
    cuts = [int(torch.randint(0, len(z), ())) for z in zs]
    assert first.flatten().tolist() == [*range(cuts[0]), *[10.0 + i for i in range(cuts[1])]]
    assert len(first) + len(second) == 9


def test_penalty_is_the_discrepancy_of_the_two_mixtures(tiny, tiny_data):
    """Mutation caught: CORAL/MMD between the domains (the pairwise penalty of CORAL, MMD)."""
    data = tiny_data(n=12)
    for name, discrepancy in (("CausIRL_CORAL", coral_discrepancy), ("CausIRL_MMD", gaussian_mmd)):
        algorithm = tiny(name)
        with torch.no_grad():
            zs = [algorithm.featurizer(x) for x, _ in data]
        torch.manual_seed(5)
        first, second = split_mixtures(zs)
        expected = discrepancy(first, second)
        torch.manual_seed(5)
        logs = algorithm.update(data)
        torch.testing.assert_close(float(logs["penalty"]), expected.item())
        assert abs(logs["penalty"] - discrepancy(zs[0], zs[1]).item()) > 1e-6
