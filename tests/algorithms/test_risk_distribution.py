"""EQRM's KDE quantile and RDM's worst-domain risk matching."""

import torch
import torch.nn.functional as F

from dgalign.algorithms.feature_alignment import gaussian_mmd
from dgalign.algorithms.risk_distribution import RDM_GAMMAS, kde_bandwidth, kde_cdf, kde_quantile


def test_kde_quantile_solves_cdf_equals_alpha():
    """Mutation caught: the empirical quantile or the mean of the risks."""
    risks = torch.tensor([0.3, 0.9, 0.4, 1.7], dtype=torch.float64)
    for alpha in (0.5, 0.75, 0.95):
        q = kde_quantile(risks, alpha)
        assert abs(kde_cdf(q, risks, kde_bandwidth(risks)).item() - alpha) < 1e-7
    assert kde_quantile(risks, 0.95) > kde_quantile(risks, 0.5) > risks.min()


def test_eqrm_minimises_the_quantile_after_burn_in(tiny, tiny_data):
    data = tiny_data()
    algorithm = tiny("EQRM", eqrm_burnin_iters=0, eqrm_quantile=0.9)
    with torch.no_grad():
        risks = torch.stack([F.cross_entropy(algorithm.predict(x), y) for x, y in data])
    logs = algorithm.update(data)
    torch.testing.assert_close(float(logs["loss"]), kde_quantile(risks, 0.9).item())
    assert logs["loss"] > logs["mean_risk"]
    burn = tiny("EQRM", eqrm_burnin_iters=5).update(data)
    assert burn["loss"] == burn["mean_risk"]


def test_rdm_matches_the_worst_domain_to_all_domains(tiny, tiny_data):
    """Mutation caught: matching the best (argmin) domain instead of the worst."""
    data = tiny_data(n=10, num_domains=3)
    algorithm = tiny(
        "RDM", num_domains=3, rdm_penalty_anneal_iters=0, rdm_lambda=2.0, variance_weight=0.5
    )
    with torch.no_grad():
        losses = [F.cross_entropy(algorithm.predict(x), y, reduction="none") for x, y in data]
    pooled = torch.cat(losses)
    worst = losses[int(torch.stack([lo.mean() for lo in losses]).argmax())]
    best = losses[int(torch.stack([lo.mean() for lo in losses]).argmin())]
    logs = algorithm.update(data)
    expected = gaussian_mmd(worst[:, None], pooled[:, None], RDM_GAMMAS)
    torch.testing.assert_close(float(logs["matching_penalty"]), expected.item())
    assert (
        abs(
            logs["matching_penalty"]
            - gaussian_mmd(best[:, None], pooled[:, None], RDM_GAMMAS).item()
        )
        > 1e-6
    )
    torch.testing.assert_close(float(logs["variance_penalty"]), (pooled.var() + worst.var()).item())
    torch.testing.assert_close(
        logs["loss"],
        logs["erm_loss"] + 2.0 * logs["matching_penalty"] + 0.5 * logs["variance_penalty"],
    )
