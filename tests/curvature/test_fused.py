"""The fused (torch.compile'd) backward against the eager one, float64: the outputs of
`head_moments` (every square / Hessian combination) and their gradients w.r.t. z, W and b
agree to 1e-10 relative, rows in several chunks with a shorter last one; the switch (modes,
environment variable, `auto`'s rule) and the fallback of a failing compiler.

Compile cost: the body compiles once per variant for the whole module (small graphs,
cached on disk by inductor across runs)."""

from __future__ import annotations

import warnings

import pytest
import torch

from dgalign.curvature import _fused_moments, fused, fused_kernels
from dgalign.curvature.moments import head_moments
from dgalign.errors import ConfigError

F64 = torch.float64
SIZES = (11, 20)  # chunks of 8 rows: 8 + 3 and 8 + 8 + 4 (with the Hessian: 11 and 16 + 4)


@pytest.fixture(autouse=True)
def _state(monkeypatch):
    monkeypatch.setattr(fused, "CHUNK_ELEMENTS", 64)  # 8 rows of d = 4 for two restarts
    monkeypatch.setattr(fused, "HESSIAN_CHUNK_ELEMENTS", 128)  # 16 rows
    monkeypatch.setattr(_fused_moments, "SUM_BLOCK_ROWS", 4)  # column sums: 8 + 3 and 20 + 0
    monkeypatch.delenv(fused.ENV_VAR, raising=False)
    monkeypatch.setitem(fused._state, "mode", None)
    monkeypatch.setitem(fused._state, "broken", False)


def make(batch=(2,), d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(SIZES)
    z = torch.randn(*batch, n, d, generator=g, dtype=F64)
    w = 0.7 * torch.randn(*batch, 1, d, generator=g, dtype=F64)
    b = torch.randn(*batch, 1, generator=g, dtype=F64)
    y = (torch.rand(*batch, n, generator=g) < 0.5).to(F64)
    return z, w, b, y


def outputs_and_grads(kernel, mode):
    """Outputs of kernel(z, w, b, y) and the gradients of a random combination of them (plus
    their squares, so every cotangent depends on the outputs) w.r.t. z, w, b."""
    z, w, b, y = make()
    z, w, b = (t.requires_grad_() for t in (z, w, b))
    with fused_kernels(mode):
        outs = kernel(z, w, b, y)
        g = torch.Generator().manual_seed(3)
        total = sum((torch.randn(o.shape, generator=g, dtype=F64) * o + o * o).sum() for o in outs)
        grads = torch.autograd.grad(total, (z, w, b))
    return [o.detach() for o in outs] + list(grads)


def counted(monkeypatch):
    calls = []
    run = fused.run

    def spy(fn, *args):
        calls.append(fn.__qualname__)
        return run(fn, *args)

    monkeypatch.setattr(fused, "run", spy)
    return calls


def assert_close(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        assert float((a - b).abs().max() / b.abs().max()) < 1e-10


MOMENTS = [
    pytest.param(None, False, id="gradient"),
    pytest.param("hessian_diag", False, id="hessian_diag"),
    pytest.param("gradient_square", False, id="gradient_square"),
    pytest.param(None, True, id="hessian"),
]


@pytest.mark.parametrize(("square", "hessian"), MOMENTS)
def test_fused_moments_match_eager(monkeypatch, square, hessian):
    def kernel(z, w, b, y):
        return head_moments(z, w, b, y, SIZES, square, hessian)

    want = outputs_and_grads(kernel, "off")
    calls = counted(monkeypatch)
    got = outputs_and_grads(kernel, "on")
    chunks = 3 if hessian else 5 if square else 0  # the plain gradient stays eager
    sums = 2 if square else 0  # the forward's column sums, one call per domain
    assert calls == ["_column_sums"] * sums + ["_backward_rows"] * chunks  # the Hessian's
    # chunks are twice as long
    assert not fused._state["broken"]
    assert_close(got, want)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(fn, **kw):
        def call(*args):
            raise RuntimeError("no C++ compiler\nmore detail")

        return call

    monkeypatch.setattr(fused, "_compiled", {})
    monkeypatch.setattr(torch, "compile", broken)

    def kernel(z, w, b, y):
        return head_moments(z, w, b, y, SIZES, "hessian_diag")

    def hessian(z, w, b, y):
        return head_moments(z, w, b, y, SIZES, hessian=True)

    want = outputs_and_grads(kernel, "off")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler") as record:
        got = outputs_and_grads(kernel, "on")
        got_hessian = outputs_and_grads(hessian, "on")
    assert len(record) == 1 and fused._state["broken"]
    assert_close(got, want)
    assert_close(got_hessian, outputs_and_grads(hessian, "off"))

    with fused_kernels(True):
        assert not fused.enabled(torch.empty(1, 1, 1))  # off for the rest of the process


def test_modes_environment_variable_and_auto_rule(monkeypatch):
    small, meta = torch.empty(1, 10, 4), torch.empty(1, 10**6, 390, device="meta")
    big = torch.empty(1, 1, fused.AUTO_MIN_ELEMENTS)
    assert fused.mode() == "auto" and not fused.enabled(small) and fused.enabled(big)
    assert not fused.enabled(meta)  # auto: CPU only
    monkeypatch.setenv(fused.ENV_VAR, "1")
    assert fused.mode() == "on" and fused.enabled(small) and fused.enabled(meta)
    with fused_kernels(False):
        assert fused.mode() == "off" and not fused.enabled(big)
        with fused_kernels("auto"):
            assert fused.mode() == "auto"
        assert fused.mode() == "off"
    assert fused.mode() == "on"  # back to the environment variable
    monkeypatch.setenv(fused.ENV_VAR, "sometimes")
    with pytest.raises(ConfigError, match="DGALIGN_FUSED_KERNELS must be auto, on"):
        fused.mode()
    with pytest.raises(ConfigError, match="fused_kernels mode"):
        fused_kernels("fast")


def test_two_logits_never_take_the_fused_path(monkeypatch):
    calls = counted(monkeypatch)
    g = torch.Generator().manual_seed(0)
    z, w, b = torch.randn(30, 3, generator=g), torch.randn(2, 3), torch.randn(2)
    y = torch.randint(0, 2, (30,), generator=g)
    with fused_kernels(True), warnings.catch_warnings():
        warnings.simplefilter("error")
        head_moments(z, w, b, y, [10, 20], "hessian_diag", True)
    assert calls == []


def test_chunk_rows_follow_the_element_budgets():
    z = torch.zeros(2, 100, 4)  # 8 entries per row of the batch
    assert fused.chunk_rows(z) == 64 // 8
    assert fused.chunk_rows(z, hessian=True) == 128 // 8
    assert fused.chunk_rows(torch.zeros(1, 10, 10**6)) == 8  # never fewer than 8 rows
