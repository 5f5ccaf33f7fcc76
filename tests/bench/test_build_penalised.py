import torch

from dgalign.algorithms.spaces import default_hparams
from dgalign.bench import FixedFeatures, build_penalised


def test_penalty_from_step_zero_on_fixed_features_without_touching_the_hparams():
    hparams = dict(default_hparams("HessianDiag", "probe"), penalty_anneal_iters=50)
    before = dict(hparams)
    algorithm = build_penalised(
        "HessianDiag", hparams, (6,), 3, 2, torch.device("cpu"), feature_dim=6
    )
    assert hparams == before
    assert algorithm.hparams["penalty_anneal_iters"] == 0
    assert isinstance(algorithm.featurizer, FixedFeatures) and algorithm.featurizer.n_outputs == 6
    assert algorithm.network[0] is algorithm.featurizer
    assert algorithm.classifier.in_features == 6
    z = torch.randn(4, 6)
    assert torch.equal(algorithm.predict(z), algorithm.classifier(z))


def test_without_feature_dim_the_featurizer_is_the_hparams_one():
    hparams = default_hparams("ERM", "ColoredMNIST")
    algorithm = build_penalised("ERM", hparams, (2, 28, 28), 2, 2, torch.device("cpu"))
    assert not isinstance(algorithm.featurizer, FixedFeatures)
    assert algorithm.predict(torch.rand(3, 2, 28, 28)).shape == (3, 2)
