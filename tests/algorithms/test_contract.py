"""Every registered algorithm honours the contract: finite logs with "loss", logits of
shape [n, C], hyper-parameters documented, and checkpoints that resume exactly."""

from __future__ import annotations

import io

import pytest
import torch

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams, random_hparams

from .conftest import check_logs

NAMES = algorithms.names()
DATASETS = ("Spurious28", "ColoredMNIST")
CONFIGS = ("default", 1, 2, 3)


def _hparams(name: str, dataset: str, config: str | int) -> dict:
    """The default configuration (MNIST CNN), or a random one on the MLP featurizer (the random
    draws on the CNN would triple the time of this directory)."""
    if config == "default":
        return default_hparams(name, dataset)
    hparams = random_hparams(name, dataset, config)
    hparams["backbone"] = "mlp"
    return hparams


def _check_logs(logs: dict) -> None:
    assert "loss" in logs
    check_logs(logs)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("name", NAMES)
def test_three_updates_log_finite_floats(name, dataset, config, small_datasets, batches):
    data = small_datasets[dataset]
    torch.manual_seed(0)
    algorithm = algorithms.get(name)(
        data.input_shape, data.num_classes, 2, _hparams(name, dataset, config)
    )
    for step in range(3):
        _check_logs(algorithm.update(batches(data, (0, 1), start=step)))
    x = data[2].x[:5]
    algorithm.eval()
    with torch.no_grad():
        logits = algorithm.predict(x)
    assert logits.shape == (5, data.num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_resumes_exactly(name, small_datasets, batches):
    """After 2 updates, state_dict + extra_state round-trip through torch.save /
    torch.load(weights_only=True) into a fresh instance; the next update is then identical.
    Annealing switches (any `*anneal_iters*` hparam) are set to fire on that next update."""
    data = small_datasets["Spurious28"]
    hparams = default_hparams(name, "Spurious28")
    hparams.update(backbone="mlp", mlp_width=32)
    hparams.update({k: 2 for k in hparams if "anneal_iters" in k})
    cls = algorithms.get(name)
    torch.manual_seed(0)
    original = cls(data.input_shape, data.num_classes, 2, hparams)
    for step in range(2):
        original.update(batches(data, (0, 1), start=step))

    buffer = io.BytesIO()
    torch.save({"model": original.state_dict(), "extra": original.extra_state()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(1)  # a different initialisation, overwritten by the checkpoint
    resumed = cls(data.input_shape, data.num_classes, 2, hparams)
    resumed.load_state_dict(state["model"])
    resumed.load_extra_state(state["extra"])

    rng = torch.get_rng_state()
    logs_original = original.update(batches(data, (0, 1), start=2))
    torch.set_rng_state(rng)
    logs_resumed = resumed.update(batches(data, (0, 1), start=2))
    assert logs_resumed == logs_original
    after_original, after_resumed = original.state_dict(), resumed.state_dict()
    for key, value in after_original.items():
        assert torch.equal(value, after_resumed[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_algorithms_are_documented(name):
    cls = algorithms.get(name)
    assert cls.DESCRIPTION and "\n" not in cls.DESCRIPTION
    assert cls.PAPER
    assert cls.__doc__ and cls.__doc__.strip()
    for dataset in ("ColoredMNIST", "PACS"):
        for h in cls.hparam_space(dataset):
            assert h.help, f"{name}.{h.name} has no help"
            assert h.sampler.description
