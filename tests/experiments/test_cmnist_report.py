"""The report's description of the training environments."""

import torch

from dgalign.experiments.cmnist_data import ColoredEnv
from dgalign.experiments.cmnist_report import composition


def _env(digits: list[int]) -> ColoredEnv:
    d = torch.tensor(digits)
    n = len(digits)
    return ColoredEnv(torch.zeros(n, 14, 14, dtype=torch.uint8), torch.zeros(n), None, d)


def test_composition_names_the_task_class():
    data = {"env0": _env([0, 1, 2, 7]), "env1": _env([5, 6, 7, 9])}
    low_high = composition(data)
    assert "env0: 4 images, 75.0% digit<5" in low_high
    assert "env1: 4 images, 0.0% digit<5" in low_high
    parity = composition(data, "parity")
    assert "env0: 4 images, 50.0% odd digits" in parity
    assert "env1: 4 images, 75.0% odd digits" in parity
