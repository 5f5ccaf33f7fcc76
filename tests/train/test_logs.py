"""`LogWindow`: logged values kept as they come, read to the host once per checkpoint."""

import math

import torch

from dgalign.train.logs import LogWindow


def test_means_over_the_steps_that_logged_each_key():
    window = LogWindow()
    window.add(0, {"loss": torch.tensor(1.0), "tau": 2.0})
    window.add(1, {"loss": torch.tensor(3.0, dtype=torch.float64)})
    assert window.means() == {"loss": 2.0, "tau": 2.0}
    assert len(window) == 2
    window.clear()
    assert len(window) == 0 and window.means() == {}


def test_the_first_non_finite_value_names_its_step_and_key():
    window = LogWindow()
    window.add(4, {"loss": torch.tensor(1.0), "penalty": torch.tensor(0.5)})
    window.add(5, {"loss": torch.tensor(1.0), "penalty": torch.tensor(float("inf"))})
    window.add(6, {"loss": torch.tensor(float("nan")), "penalty": 0.0})
    bad = window.first_non_finite()
    assert (bad.key, bad.step, bad.value) == ("penalty", 5, math.inf)


def test_all_tensors_of_a_window_leave_the_device_in_one_copy(monkeypatch):
    copies = []
    tolist = torch.Tensor.tolist

    def counted(tensor):
        copies.append(tensor.shape)
        return tolist(tensor)

    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    window = LogWindow()
    for step in range(5):
        window.add(step, {"loss": torch.tensor(float(step)), "nll": torch.tensor(1.0)})
    assert window.means() == {"loss": 2.0, "nll": 1.0}
    assert window.first_non_finite() is None
    assert copies == [(10,)]  # one stacked read, reused by both questions
