"""The head-products benchmark runs end to end on small shapes (no timing assertion)."""

from __future__ import annotations

import pytest
import torch

from dgalign.bench.head_products import products, run_products
from dgalign.cli import main
from dgalign.curvature import moments
from dgalign.errors import ConfigError


def test_table_through_the_cli(capsys):
    threads = torch.get_num_threads()
    try:
        args = ["bench", "head-products", "--rows", "50", "--width", "8"]
        assert main([*args, "--chunk-rows", "16", "0", "--repeats", "2", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "Z [50, 8] float32" in out
    rows = ("Z Gam, chunks of 16 rows", "Z Gam, chunks of all 50 rows", "U^T Z, k = 2, row blocks")
    rows += ("V Z^T, whole domain, rows [k, n], k = 2",)
    for row in rows:
        assert f"| {row} |" in out


def test_products_compute_what_they_name():
    table = products(30, 5, [7], torch.device("cpu"))
    blas = moments.use_blas_syrk()  # the BLAS syrk row where torch's MKL has syrk
    assert len(table) == 1 + 2 + blas + 3 + 3 + 3 + 1 + 3 + 2
    assert ("Z^T S Z, BLAS syrk (syrk_)" in table) == blas
    for run, flops in table.values():
        run()
        assert flops > 0
    times, flops = run_products(30, 5, [7, 0], 3)
    assert all(len(t) == 3 for t in times.values()) and set(times) == set(flops)


@pytest.mark.parametrize("bad", [dict(n=0, d=5), dict(n=5, d=5, rows=[-1])])
def test_bad_sizes_are_one_line_errors(bad):
    with pytest.raises(ConfigError, match="must be >= 1"):
        run_products(bad["n"], bad["d"], bad.get("rows", [0]), 2)
