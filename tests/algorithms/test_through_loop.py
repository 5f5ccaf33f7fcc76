"""Every registered algorithm goes through the real training loop on two small datasets
(DomainBed's Debug28 with the MLP, ColoredMNIST on a synthetic pool with the MNIST-CNN): two
checkpoints or more with the curvature diagnostics on, an interruption after the first, and a
resume. Switching steps are set early so the resumed part runs every phase. For the algorithms
added for DomainBed parity (`EXACT`) the resumed records must equal an uninterrupted run's."""

import json

import pytest
import torch
from tests.train.helpers import strip_run_specific

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams
from dgalign.data import mnist
from dgalign.train import RunConfig, run_training

EARLY = {
    "ERMPlusPlus": {"linear_steps": 2, "sma_start": 3},
    "TRM": {"iters": 2},
    "IB_ERM": {"ib_penalty_anneal_iters": 2},
    "IB_IRM": {"ib_penalty_anneal_iters": 2, "irm_penalty_anneal_iters": 3},
    "EQRM": {"eqrm_burnin_iters": 2},
    "RDM": {"rdm_penalty_anneal_iters": 2},
    "DDG": {"ddg_pretrain_steps": 3},  # the interruption falls in stage 2
    "GLSD_SSD": {"glsd_lossbalancer_warmup": 2, "glsd_update_worst_env_every_steps": 2},
    "GLSD_FSD": {"glsd_lossbalancer_warmup": 2, "glsd_update_worst_env_every_steps": 2},
}
#: Generic switch steps, set to 2 wherever an algorithm has them (penalties, FGMix's start).
SWITCHES = ("penalty_anneal_iters", "start_step")
EXACT = [
    "ERMPlusPlus", "TRM", "Transfer", "IB_ERM", "IB_IRM", "CAD", "CondCAD",
    "CausIRL_CORAL", "CausIRL_MMD", "EQRM", "RDM", "ADRMX", "URM", "GLSD_SSD", "GLSD_FSD",
    "CNSN", "MetaMixup", "L2AOT", "DDG",
]  # fmt: skip
DATASETS = {"Debug28": {"backbone": "mlp", "mlp_width": 16}, "ColoredMNIST": {}}
POOL = 60  # synthetic MNIST images: 20 per ColoredMNIST environment


@pytest.fixture
def synthetic_mnist(monkeypatch):
    """ColoredMNIST built from POOL random digits instead of the MNIST files."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (POOL, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (POOL,), generator=g)
    monkeypatch.setattr(mnist, "load_mnist_pool", lambda root: (images, labels))


def _config(tmp_path, name, algorithm, dataset):
    defaults = default_hparams(algorithm, dataset)
    switches = {key: 2 for key in SWITCHES if key in defaults}
    hparams = {**DATASETS[dataset], "batch_size": 8, **switches, **EARLY.get(algorithm, {})}
    return RunConfig(
        dataset=dataset,
        algorithm=algorithm,
        output_dir=str(tmp_path / name),
        test_envs=[2],
        hparams=json.dumps(hparams),
        steps=5,
        checkpoint_freq=2,
    )


def _interrupted_then_resumed(config, cls, monkeypatch) -> list[dict]:
    """Run `config`, interrupted in the update after the first two checkpoints, then resume
    it to the end; return the records of the resumed run."""
    original = cls.update
    calls = {"n": 0}

    def crash_after_3(self, minibatches):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return original(self, minibatches)

    monkeypatch.setattr(cls, "update", crash_after_3)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, progress=False)
    monkeypatch.setattr(cls, "update", original)
    return run_training(config, progress=False).records


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("algorithm", algorithms.names())
def test_trains_to_the_end_with_diagnostics_and_resumes(
    algorithm, dataset, tmp_path, monkeypatch, synthetic_mnist
):
    cls = algorithms.get(algorithm)
    config = _config(tmp_path, "resumed", algorithm, dataset)
    resumed = _interrupted_then_resumed(config, cls, monkeypatch)
    assert [r["step"] for r in resumed] == [0, 2, 4]
    diagnosed = ["hess_dist" in r for r in resumed]
    assert diagnosed == [_has_head(algorithm, dataset)] * 3
    for record in resumed:
        assert all(0.0 <= record[k] <= 1.0 for k in record if k.endswith("_acc"))
    if dataset == "Debug28" and algorithm in EXACT:
        full = run_training(_config(tmp_path, "full", algorithm, dataset), progress=False).records
        assert strip_run_specific(resumed) == strip_run_specific(full)


def _has_head(algorithm: str, dataset: str) -> bool:
    """Whether the run's algorithm declares a prediction head (and so gets diagnostics)."""
    hparams = {**default_hparams(algorithm, dataset), **DATASETS[dataset], "batch_size": 8}
    shape = (3, 28, 28) if dataset == "Debug28" else (2, 28, 28)
    return algorithms.get(algorithm)(shape, 2, 2, hparams).prediction_head() is not None


@pytest.mark.parametrize("algorithm", algorithms.names())
def test_declared_prediction_head_is_the_predict_path(algorithm):
    """Where `prediction_head()` gives (f, h), h(f(x)) is what `predict` returns."""
    hparams = {**default_hparams(algorithm, "Debug28"), "backbone": "mlp", "mlp_width": 16}
    hparams["batch_size"] = 8
    torch.manual_seed(0)
    model = algorithms.get(algorithm)((3, 28, 28), 2, 2, hparams).double().eval()
    head = model.prediction_head()
    if head is None:
        assert algorithm in NO_HEAD
        return
    featurizer, classifier = head
    x = torch.randn(8, 3, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(classifier(featurizer(x)), model.predict(x))


#: predict reads a context or domain embedding beside f(x) (ARM, MTL) or has no
#: `featurizer` -> linear `classifier` chain (ADRMX: label minus domain features, MLP head).
NO_HEAD = {"ARM", "MTL", "ADRMX"}
