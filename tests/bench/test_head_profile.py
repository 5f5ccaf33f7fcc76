"""The head-profile benchmark runs end to end on small shapes (no timing assertion)."""

from __future__ import annotations

import pytest
import torch

from dgalign.bench.head_profile import KERNELS, make_call, profile_table, time_round_robin
from dgalign.cli import main
from dgalign.errors import ConfigError


@pytest.mark.parametrize("kind", KERNELS)
def test_every_kernel_runs_forward_and_backward(kind):
    make_call(kind, 60, 5, 2)()


def test_round_robin_and_profile_table():
    calls = {k: make_call(k, 40, 4, 2) for k in ("ERM", "HGP")}
    times = time_round_robin(calls, 3)
    assert set(times) == {"ERM", "HGP"} and all(len(t) == 3 for t in times.values())
    table = profile_table(calls["HGP"], 2, 5)
    assert table.startswith("| op | ms per call |") and "OneLogitHGP" in table


def test_table_through_the_cli(capsys):
    threads = torch.get_num_threads()
    try:
        args = ["bench", "head-profile", "--rows", "60", "--width", "6", "--calls", "2"]
        assert main([*args, "--warmup", "1", "--kernels", "ERM", "Fishr", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "Z [60, 6] float32, 2 domains" in out
    assert "Fishr: " in out and "Fishr, torch.profiler, self CPU time:" in out


@pytest.mark.parametrize(
    ("kind", "rows", "match"), [("SAM", 60, "unknown kernel"), ("HGP", 3, "--rows must be")]
)
def test_bad_input_is_a_one_line_error(kind, rows, match):
    with pytest.raises(ConfigError, match=match):
        make_call(kind, rows, 4, 2)
