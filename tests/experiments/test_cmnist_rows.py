"""The reproduction's rows are registered algorithms: `dgalign reproduce` trains each row by
its algorithm's own penalty (`head_penalties`) with the row's overrides."""

import json

import pytest

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams
from dgalign.experiments import cmnist_data
from dgalign.experiments.cmnist_data import DataConfig
from dgalign.experiments.cmnist_rows import ABLATIONS, METHODS, all_rows
from dgalign.experiments.cmnist_run import ReproduceConfig, run_reproduction
from dgalign.experiments.cmnist_train import Protocol

from .conftest import synthetic_mnist

EXPECTED = {
    "ERM": "ERM",
    "IRM": "IRM",
    "VREx": "VREx",
    "Fishr": "Fishr",
    "HGP": "HGP",
    "Hutchinson": "Hutchinson",
    "HessianDiag": "HessianDiag",
    "HessianDiag-E150": "HessianDiag",
    "CMA": "CMA",
    "HGP(alpha=0)": "HGP",
    "HGP(beta=0)": "HGP",
    "Hutchinson(alpha=0)": "Hutchinson",
    "Hutchinson(beta=0)": "Hutchinson",
}


def test_every_row_names_a_registered_algorithm_and_valid_overrides():
    assert {name: row.algorithm for name, row in all_rows().items()} == EXPECTED
    for row in all_rows().values():
        assert row.cls is algorithms.get(row.algorithm)
        hp = row.hparams(label_shift=False, mean_term="envs")
        assert set(hp) == set(default_hparams(row.algorithm, "ColoredMNIST"))
    assert METHODS["Hutchinson"].hparams()["n_probes"] == 150
    assert METHODS["Hutchinson"].hparams(label_shift=True)["n_probes"] == 200
    assert METHODS["HGP"].hparams(mean_term="pooled")["mean_term"] == "pooled"
    hgp = METHODS["HGP"].hparams()
    assert (hgp["reduction"], hgp["detach_mean"], hgp["hess_weight"]) == ("sum", False, 1.0)
    assert ABLATIONS["HGP(alpha=0)"].hparams()["hess_weight"] == 0.0
    assert METHODS["IRM"].hparams()["penalty_form"] == "squared"


def test_reproduce_trains_each_row_by_its_registered_algorithm(tmp_path, monkeypatch):
    images, digits = synthetic_mnist(50100)
    monkeypatch.setattr(cmnist_data, "load_mnist_train", lambda data_dir: (images, digits))
    calls: list[tuple[str, dict]] = []
    for name in {r.algorithm for r in all_rows().values()} - {"ERM"}:
        cls = algorithms.get(name)
        real = cls.head_penalties.__func__

        def spy(klass, *args, _real=real, **kwargs):
            calls.append((klass.__name__, dict(args[-1])))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "head_penalties", classmethod(spy))
    config = ReproduceConfig(
        output_dir=str(tmp_path / "run"),
        methods=list(all_rows()),
        restarts=1,
        data=DataConfig(pool=120),
        protocol=Protocol(steps=2, anneal_iters=1, hidden=6),
        quick=True,
        dynamics_every=1,
        fgsm_eps=[0.0],
        progress=False,
    )
    root = run_reproduction(config)
    for name, row in all_rows().items():
        rec = json.loads((root / row_dir(name) / "restart0.json").read_text())
        assert rec["method"] == name and rec["algorithm"] == row.algorithm
    seen = {}
    for algo, hp in calls:
        seen.setdefault(algo, []).append(hp)
    assert set(seen) == set(EXPECTED.values()) - {"ERM"}
    assert any(hp.get("expected_probes") == 150 for hp in seen["HessianDiag"])
    assert all(hp["reduction"] == "sum" for hp in seen["HGP"] + seen["CMA"])


def row_dir(name: str) -> str:
    from dgalign.utils.text import slug

    return slug(name)


@pytest.mark.parametrize("name", ["IRM", "Fishr", "HGP", "CMA"])
def test_the_protocol_schedule_replaces_the_algorithms_annealing(name):
    proto = Protocol()
    schedule = proto.schedule()
    assert (schedule.weight(0), schedule.weight(189), schedule.weight(190)) == (
        1.0,
        1.0,
        proto.penalty_weight,
    )
    assert schedule.rescale and not schedule.reset_optimizer
    own = algorithms.get(name).penalty_schedule(METHODS[name].hparams())
    assert own.reset_optimizer  # DomainBed's annealing, unused by the reproduction
