"""`--select`: the hold-out split keeps only training-env rows, the rules, and the choice of
curv_weight never reads the test environment (poisoned test labels change nothing)."""

import dataclasses
import json

import pytest
import torch

from dgalign.errors import ConfigError
from dgalign.experiments import cmnist_data, cmnist_select
from dgalign.experiments.cmnist_data import DataConfig, RestartData
from dgalign.experiments.cmnist_model import init_restart
from dgalign.experiments.cmnist_run import ReproduceConfig, run_reproduction
from dgalign.experiments.cmnist_select import choose, holdout_split, run_selection
from dgalign.experiments.cmnist_train import Protocol

from .conftest import synthetic_mnist, synthetic_restart

PROTOCOL = Protocol(steps=6, anneal_iters=3, hidden=6)


def _config(tmp_path, name="run", **kw):
    args = dict(
        output_dir=str(tmp_path / name),
        methods=["ERM"],
        restarts=2,
        data=DataConfig(pool=120),
        protocol=PROTOCOL,
        dynamics_every=3,
        fgsm_eps=[0.0],
        progress=False,
    )
    args.update(kw)
    return ReproduceConfig(**args)


def _restarts(count=2):
    data = [synthetic_restart((40, 40, 30), seed=k) for k in range(count)]
    gen = torch.Generator().manual_seed(0)
    return data, [init_restart(gen, PROTOCOL.hidden) for _ in range(count)]


def _poisoned(restart: RestartData) -> RestartData:
    """The test and gray envs with every label flipped and random images."""
    envs = list(restart.envs)
    for i in (2, 3):
        env = envs[i]
        noise = torch.randint(0, 256, env.images.shape, dtype=torch.uint8)
        envs[i] = dataclasses.replace(env, labels=1 - env.labels, images=noise)
    return RestartData(tuple(envs))


def test_holdout_split_holds_only_training_rows():
    restart = synthetic_restart((40, 30, 20))
    split = holdout_split(restart, 0.25)
    for name, fit, val in (("env0", "env0", "test"), ("env1", "env1", "gray")):
        env = restart[name]
        cut = len(env) - round(0.25 * len(env))
        assert torch.equal(split[fit].images, env.images[:cut])
        assert torch.equal(split[val].images, env.images[cut:])
        assert torch.equal(split[val].labels, env.labels[cut:])
        assert torch.equal(split[val].colors, env.colors[cut:])


def test_rules():
    scores = {0.0: [0.80, 0.90], 0.01: [0.70, 0.72], 0.1: [0.52, 0.52]}
    assert choose(scores, "worst-env") == 0.0
    assert choose(scores, "env-gap") == 0.01  # 0.1 has no gap but is below MIN_ACCURACY
    assert choose({0.0: [0.5, 0.5], 0.1: [0.5, 0.5]}, "env-gap") == 0.0  # tie: smaller weight
    with pytest.raises(ConfigError, match="--select"):
        choose(scores, "test-acc")


@pytest.mark.parametrize("rule", cmnist_select.RULES)
def test_choice_does_not_change_when_the_test_labels_are_poisoned(tmp_path, rule):
    data, inits = _restarts()
    clean = run_selection(_config(tmp_path, "clean"), tmp_path / "clean", data, inits, rule)
    poisoned = [_poisoned(d) for d in data]
    assert not torch.equal(poisoned[0]["test"].labels, data[0]["test"].labels)
    bad = run_selection(_config(tmp_path, "bad"), tmp_path / "bad", poisoned, inits, rule)
    for a, b in zip(clean, bad, strict=True):
        assert a["selection"] == b["selection"]
        assert a["final"]["train_acc"] == b["final"]["train_acc"]
    assert {r["selection"]["chosen"] for r in clean} <= set(cmnist_select.GRID)
    assert set(clean[0]["selection"]["val_acc"]) == {f"{w:.6g}" for w in cmnist_select.GRID}
    # the test accuracy of the refit model does read the (poisoned) test env
    assert clean[0]["final"]["test_acc"] != bad[0]["final"]["test_acc"]


def test_reproduce_with_select_resumes_and_reports(tmp_path, monkeypatch):
    images, digits = synthetic_mnist(50200)
    monkeypatch.setattr(cmnist_data, "load_mnist_train", lambda data_dir: (images, digits))
    config = _config(tmp_path, select="env-gap", variant="parity")
    config.data = cmnist_data.variant("parity").apply(config.data)
    root = run_reproduction(config)
    name = cmnist_select.selected_name("env-gap")
    first = json.loads((root / "HessianDiag-sel_env-gap" / "restart1.json").read_text())
    assert first["selection"]["rule"] == "env-gap" and first["method"] == name
    report = (root / "report.md").read_text()
    assert name in report and "variant parity" in report.splitlines()[0]
    before = {p: p.stat().st_mtime_ns for p in (root / "selection").rglob("*.json")}
    run_reproduction(dataclasses.replace(config, select="worst-env"))  # reuses the candidates
    assert {p: p.stat().st_mtime_ns for p in (root / "selection").rglob("*.json")} == before
    assert (root / "HessianDiag-sel_worst-env" / "results.json").exists()
    from dgalign.experiments.cmnist_results import compact, variants_table

    small = compact(root, "parity")
    assert set(small["methods"]) == {"ERM", name, cmnist_select.selected_name("worst-env")}
    assert small["methods"][name][1]["selection"] == first["selection"]
    assert small["identity"]["data"]["task"] == "parity"
    table = variants_table([small, small], ["ERM", name])
    assert table.count("\n| ") == 2 and "Restarts per cell: 2." in table
