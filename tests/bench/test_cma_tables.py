"""The CMA cost tables run end to end in quick mode (a smoke test, no timing assertion), with
the paper's head shapes listed and the K-FAC error in [0, 1] for a head at init."""

from __future__ import annotations

import pytest
import torch

from dgalign.bench.cma_tables import METHODS, run_tables, shapes
from dgalign.cli import main
from dgalign.errors import ConfigError


def test_quick_tables_through_the_cli(capsys):
    threads = torch.get_num_threads()
    try:
        args = [
            "bench",
            "curvature",
            "--cma-tables",
            "--quick",
            "--threads",
            "1",
            "--full-budget-mb",
            "10",
        ]
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert out.startswith("Step CPU time in ms (cpu, 1 threads")
    time_table = out.split("Step wall time")[0]
    assert "Step wall time in ms" in out.split("Peak memory")[0]
    header = next(line for line in time_table.splitlines() if line.startswith("| head"))
    assert [c.strip() for c in header.split("|")[2:-2]] == list(METHODS)
    rows = [line for line in time_table.splitlines() if line.startswith("| ColoredMNIST")]
    assert len(rows) == 1 and "refused" not in rows[0]
    office = next(line for line in time_table.splitlines() if line.startswith("| OfficeHome"))
    assert office.split("|")[3].strip() == "refused"  # CMA-full over a 10 MB budget
    assert "refused: CMA hessian_mode 'full' needs about" in out
    assert "K-FAC approximation error" in out


def test_shapes_are_the_papers_and_bad_arguments_are_refused():
    full = shapes()
    assert len(full) == 10 and {s.dim for s in full} == {2048, 384}
    assert {(s.dataset, s.num_classes, s.num_domains) for s in full} == {
        ("ColoredMNIST", 2, 2),
        ("VLCS", 5, 3),
        ("PACS", 7, 3),
        ("TerraIncognita", 10, 3),
        ("OfficeHome", 65, 3),
    }
    assert all(s.batch == 32 for s in full)
    with pytest.raises(ConfigError, match="steps"):
        run_tables(steps=0, quick=True)
    with pytest.raises(ConfigError, match="cuda"):
        if not torch.cuda.is_available():
            run_tables(device="cuda", quick=True)
        else:
            raise ConfigError("cuda present: nothing to refuse")
