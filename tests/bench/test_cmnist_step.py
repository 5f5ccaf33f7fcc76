"""The Colored MNIST step benchmark runs end to end on small shapes (no timing assertion)."""

from __future__ import annotations

import pytest
import torch

from dgalign.bench.cmnist_step import BOUND, format_table, run_benchmark
from dgalign.cli import main
from dgalign.errors import ConfigError


def test_round_robin_table_through_the_cli(capsys):
    threads = torch.get_num_threads()
    try:
        args = [
            "bench",
            "cmnist-step",
            "--methods",
            "HessianDiag",
            "IRM",
            "--rows",
            "40",
            "--repeats",
            "2",
            "--threads",
            "1",
        ]
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "load average before" in out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["ERM", "HessianDiag", "IRM", BOUND]


def test_every_round_times_every_method_and_the_bound():
    times = run_benchmark(["HGP"], restarts=2, rows=20, repeats=3)
    assert set(times) == {"ERM", "HGP", BOUND}
    assert len(times["ERM"]) == len(times["HGP"]) == len(times[BOUND]) == 6
    assert "| HGP |" in format_table(times)


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown method"):
        run_benchmark(["Nope"], 1, 20, 1)
    with pytest.raises(ConfigError, match="repeats"):
        run_benchmark(["HGP"], 1, 20, 0)


def test_fused_both_times_each_kernel_row_both_ways():
    times = run_benchmark(["HessianDiag", "IRM"], restarts=1, rows=20, repeats=1, fused_mode="both")
    assert set(times) == {"ERM", "HessianDiag+eager", "HessianDiag+fused", "IRM", BOUND}
    assert "| HessianDiag+fused |" in format_table(times) and "<= 1.05 x ERM" in format_table(times)
    with pytest.raises(ConfigError, match="--fused"):
        run_benchmark(["HGP"], 1, 20, 1, fused_mode="sometimes")
