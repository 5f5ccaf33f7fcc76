"""The symmetric rank-k update C += alpha X^T X through BLAS's syrk, where torch's build has it.

torch has no syrk: `X.mT @ X` costs a full product, 2 k n^2 FLOPs for X [k, n], where the
symmetric result needs half. torch's CPU builds link Intel MKL and export its Fortran-convention
entry points `mkl_blas_ssyrk` / `mkl_blas_dsyrk`; `syrk_upper_` calls them through ctypes on
CPU float32/float64 tensors. A row-major X [k, n] (row stride `lda`) is the column-major
A = X^T [n, k], so "C = A A^T, uplo L" in column-major order fills C's upper triangle in
row-major order (diagonal included); the strict lower triangle is left as it was.

`available()` is False where the symbol is missing (other BLAS, other platforms), after a
failed self-check against `torch.mm`, or with DGALIGN_MKL_SYRK=0; callers then use products.
Integers go as 64-bit little-endian values, read correctly by LP64 and ILP64 builds alike.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor

ENV_VAR = "DGALIGN_MKL_SYRK"
_DTYPES = {torch.float32: "mkl_blas_ssyrk", torch.float64: "mkl_blas_dsyrk"}
_SCALARS = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double}


@functools.cache
def _library() -> ctypes.CDLL | None:
    if sys.platform != "linux" or not torch.backends.mkl.is_available():
        return None
    path = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        lib = ctypes.CDLL(str(path))
        for name in _DTYPES.values():
            getattr(lib, name)
    except (OSError, AttributeError):
        return None
    return lib


def _call(c: Tensor, x: Tensor, alpha: float, beta: float) -> None:
    k, n = x.shape
    fn = getattr(_library(), _DTYPES[x.dtype])
    scalar = _SCALARS[x.dtype]
    ints = [ctypes.c_int64(v) for v in (n, k, x.stride(0), c.stride(0))]
    fn(
        ctypes.byref(ctypes.c_char(b"L")),
        ctypes.byref(ctypes.c_char(b"N")),
        ctypes.byref(ints[0]),
        ctypes.byref(ints[1]),
        ctypes.byref(scalar(alpha)),
        ctypes.c_void_p(x.data_ptr()),
        ctypes.byref(ints[2]),
        ctypes.byref(scalar(beta)),
        ctypes.c_void_p(c.data_ptr()),
        ctypes.byref(ints[3]),
    )


@functools.cache
def _self_check() -> bool:
    """One small float64 and float32 update against `torch.mm` (upper triangle, strided)."""
    gen = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-4)):
        x = torch.randn(37, 13, generator=gen, dtype=torch.float64)
        c = torch.randn(11, 15, generator=gen, dtype=torch.float64)
        c[:, 13:] = 0
        want = (c[:, :11] - 0.5 * x[:, :11].T @ x[:, :11]).triu()
        xd, cd = x.to(dtype), c.to(dtype)
        _call(cd[:, :11], xd[:, :11], -0.5, 1.0)
        got = cd[:, :11].to(torch.float64)
        if not torch.allclose(got.triu(), want, rtol=tol, atol=tol):
            return False
        if not torch.equal(got.tril(-1), c[:, :11].tril(-1).to(dtype).to(torch.float64)):
            return False
        if cd[:, 13:].abs().max() != 0:
            return False
    return True


def available() -> bool:
    """Whether `syrk_upper_` runs here (see the module docstring)."""
    if os.environ.get(ENV_VAR, "").strip() == "0" or _library() is None:
        return False
    if not _self_check():
        warnings.warn(
            f"MKL's syrk failed its self-check; symmetric products use full products (set "
            f"{ENV_VAR}=0 to skip the check)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def supports(c: Tensor, x: Tensor) -> bool:
    """Whether `syrk_upper_` takes these operands: CPU, float32/float64, unit column stride."""
    return (
        x.device.type == "cpu"
        and c.device.type == "cpu"
        and x.dtype in _DTYPES
        and c.dtype == x.dtype
        and x.dim() == 2
        and c.dim() == 2
        and x.stride(1) == 1
        and c.stride(1) == 1
        and c.shape == (x.shape[1], x.shape[1])
        and not (x.requires_grad or c.requires_grad)
    )


def syrk_upper_(c: Tensor, x: Tensor, alpha: float = 1.0) -> None:
    """c[i, j] += alpha (X^T X)[i, j] for i <= j (row-major upper triangle), in place."""
    if not supports(c, x):
        raise ValueError("syrk_upper_ takes CPU float32/float64 matrices with unit column stride")
    if x.shape[0] and x.shape[1]:
        _call(c, x, alpha, 1.0)
