"""`dgalign reproduce cmnist` end to end on synthetic MNIST: files, resume, QUICK labels."""

import json

import pytest
import torch

from dgalign.cli import build_parser, main
from dgalign.cli.reproduce_cmd import config_from_args
from dgalign.errors import RunDirError
from dgalign.experiments import cmnist_data, cmnist_run
from dgalign.experiments.cmnist_data import DataConfig
from dgalign.experiments.cmnist_rows import CORE
from dgalign.experiments.cmnist_run import ReproduceConfig, run_reproduction
from dgalign.experiments.cmnist_train import Protocol

from .conftest import synthetic_mnist


@pytest.fixture
def fake_mnist(monkeypatch):
    images, digits = synthetic_mnist(50300)  # a 300-image test env keeps the test fast
    monkeypatch.setattr(cmnist_data, "load_mnist_train", lambda data_dir: (images, digits))


def _config(tmp_path, **kw):
    args = dict(
        output_dir=str(tmp_path / "run"),
        methods=["ERM", "IRM"],
        restarts=2,
        data=DataConfig(pool=200),
        protocol=Protocol(steps=4, anneal_iters=2, hidden=8),
        quick=True,
        dynamics_every=2,
        fgsm_eps=[0.0, 0.1],
        progress=False,
    )
    args.update(kw)
    return ReproduceConfig(**args)


def test_run_resume_report_and_transferability(tmp_path, fake_mnist, monkeypatch, capsys):
    root = run_reproduction(_config(tmp_path))
    for name in ("report.md", "summary.json", "fgsm.png", "dynamics.png", "dynamics_IRM.png"):
        assert (root / name).stat().st_size > 0
    report = (root / "report.md").read_text()
    assert report.splitlines()[0].startswith("# QUICK")
    assert json.loads((root / "summary.json").read_text())["title"].startswith("QUICK")
    assert len(json.loads((root / "IRM" / "results.json").read_text())["restarts"]) == 2
    assert (
        main(
            [
                "reproduce",
                "cmnist-fig4",
                str(root),
                str(root),
                "--methods",
                "IRM",
                "--out",
                str(tmp_path / "fig4.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "fig4.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["reproduce", "cmnist-table", str(root), str(root), "--methods", "IRM"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| IRM")]
    tests = [json.loads((root / "IRM" / f"restart{k}.json").read_text()) for k in (0, 1)]
    test_acc = [100 * t["final"]["test_acc"] for t in tests]
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == cells[6] == "2"
    mean, std = (float(v) for v in cells[3].split("±"))
    assert mean == pytest.approx(sum(test_acc) / 2, abs=0.051)
    assert std == pytest.approx(abs(test_acc[0] - test_acc[1]) / 2, abs=0.051)
    assert cells[5] == "65.6 ± 1.8"  # the paper's balanced IRM test accuracy
    assert main(["reproduce", "cmnist-table", str(tmp_path), str(root)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no config.json" in err[0]

    calls = []
    real = cmnist_run.train_restarts
    monkeypatch.setattr(
        cmnist_run,
        "train_restarts",
        lambda data, *a, **k: calls.append(len(data)) or real(data, *a, **k),
    )
    run_reproduction(_config(tmp_path))
    assert calls == []  # everything was there: nothing retrained
    run_reproduction(_config(tmp_path, restarts=3))
    assert calls == [1, 1]  # only restart 2 of each method
    with pytest.raises(RunDirError, match="other settings"):
        run_reproduction(_config(tmp_path, seed=1))

    argv = ["analyze", "transferability", str(root / "IRM"), "--deltas", "0", "0.2"]
    argv += ["--rounds", "1", "--steps", "3", "--max-samples", "0", "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "transferability.json").read_text())
    assert result["IRM (test)"]["runs"] == 3


def test_cli_defaults_and_quick():
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["reproduce", "cmnist", "--quick", "--label-shift"]))
    assert cfg.quick and cfg.restarts == 1 and cfg.methods == list(CORE)
    assert cfg.protocol == Protocol() and cfg.data.pool == 50000 and cfg.data.label_shift
    assert cfg.output_dir == "runs/reproduce-cmnist-labelshift-quick"
    full = config_from_args(parser.parse_args(["reproduce", "cmnist", "--label-shift"]))
    assert full.identity() == cfg.identity()  # the full run continues a QUICK directory
    argv = ["reproduce", "cmnist", "--quick", "--methods", "VREx"]
    cfg = config_from_args(parser.parse_args(argv))
    assert cfg.methods == ["VREx"]
    cfg = config_from_args(parser.parse_args(["reproduce", "cmnist", "--ablations"]))
    assert not cfg.quick and cfg.restarts == 10 and cfg.protocol.steps == 501
    assert "HGP(beta=0)" in cfg.methods and cfg.output_dir == "runs/reproduce-cmnist"
    assert torch.float32 == getattr(torch, cfg.dtype)


def test_label_shift_quick_pool_trains_unequal_restarts_apart(tmp_path, fake_mnist):
    config = _config(tmp_path, methods=["ERM"], data=DataConfig(label_shift=True, pool=400))
    root = run_reproduction(config)
    recs = json.loads((root / "ERM" / "results.json").read_text())["restarts"]
    assert [r["batch_restarts"] for r in recs] == [1, 1]  # class counts differ per restart
    assert recs[0]["env_sizes"] != recs[1]["env_sizes"]
