"""BLAS's symmetric rank-k update (`_syrk`) and `moments.syrk_` against plain products."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dgalign.curvature import _syrk, moments

needs_syrk = pytest.mark.skipif(not _syrk.available(), reason="this torch build has no MKL syrk")


def test_available_where_torch_links_mkl_on_linux(monkeypatch):
    monkeypatch.delenv(_syrk.ENV_VAR, raising=False)
    assert _syrk.available() == (sys.platform == "linux" and torch.backends.mkl.is_available())


@needs_syrk
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("alpha", [1.0, -0.25])
def test_syrk_upper_adds_the_upper_triangle_only(dtype, strided, alpha):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(41, 20, generator=g, dtype=torch.float64)
    c = torch.randn(9, 12, generator=g, dtype=torch.float64)
    xs, cs = (x[:, 3:12], c[:, 2:11]) if strided else (x[:, :9].contiguous(), c[:, :9].clone())
    before = cs.clone()
    got = cs.to(dtype)
    _syrk.syrk_upper_(got, xs.to(dtype), alpha)
    want = before + alpha * xs.T @ xs
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got.double().triu(), want.triu(), rtol=tol, atol=tol)
    assert torch.equal(got.double().tril(-1), before.to(dtype).double().tril(-1))


@needs_syrk
def test_syrk_upper_refuses_operands_it_cannot_take():
    x, c = torch.randn(5, 4), torch.zeros(4, 4)
    for bad_c, bad_x in [
        (c, x.T.contiguous().T),  # column-major x
        (c.double(), x),  # mixed dtypes
        (torch.zeros(3, 3), x),  # wrong shape
        (c.half(), x.half()),
    ]:
        assert not _syrk.supports(bad_c, bad_x)
        with pytest.raises(ValueError, match="syrk_upper_ takes"):
            _syrk.syrk_upper_(bad_c, bad_x)


def test_environment_variable_turns_it_off(monkeypatch):
    monkeypatch.setenv(_syrk.ENV_VAR, "0")
    assert not _syrk.available()


@pytest.mark.parametrize("blas", [True, False])
@pytest.mark.parametrize("width", [7, 100])
def test_moments_syrk_then_mirror_is_the_full_product(blas, width):
    """`syrk_` (BLAS per restart, or the upper column blocks) and `mirror_` give X^T X."""
    if blas and not _syrk.available():
        pytest.skip("this torch build has no MKL syrk")
    g = torch.Generator().manual_seed(width)
    x = torch.randn(2, 30, width + 3, generator=g, dtype=torch.float64)[..., 1 : 1 + width]
    h0 = torch.randn(2, width, width, generator=g, dtype=torch.float64)
    h0 = h0 + h0.mT
    h = h0.clone()
    moments.syrk_(h, x, alpha=-2.0, blas=blas)
    moments.mirror_(h)
    torch.testing.assert_close(h, h0 - 2.0 * x.mT @ x, rtol=1e-12, atol=1e-12)


def test_importing_what_the_fork_server_imports_runs_no_blas():
    """The self-check runs BLAS; a fork server must not start BLAS's threads before it forks
    (its children would hang in their first parallel op), so it waits for the first call."""
    code = (
        "import torch._dynamo, dgalign.cli, dgalign.train\n"
        "from dgalign.curvature import _syrk, moments\n"
        "assert moments.USE_BLAS_SYRK is None\n"
        "assert _syrk._self_check.cache_info().currsize == 0\n"
        "assert moments.use_blas_syrk() == _syrk.available()\n"
        "assert moments.USE_BLAS_SYRK is not None\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
