"""The example scripts run (tiny step counts): dgalign.losses in a plain loop and in a
PyTorch Lightning module."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


@pytest.mark.parametrize(
    "penalty", ["hgp", "hutchinson", "diag", "cma", "fishr", "irm", "vrex", "coral"]
)
def test_plain_loop_trains_with_every_penalty(penalty):
    result = load("plain_loop").train(penalty, steps=3)
    assert math.isfinite(result["loss"]) and result["penalty"] != 0.0
    assert 0.0 <= result["test_acc"] <= 1.0


def test_plain_loop_without_penalty_has_none():
    assert load("plain_loop").train("none", steps=2)["penalty"] == 0.0


def test_lightning_module_fits():
    pytest.importorskip("lightning", reason="the lightning extra is not installed")
    accuracy = load("lightning_module").fit("hgp", steps=3)
    assert 0.0 <= accuracy <= 1.0
