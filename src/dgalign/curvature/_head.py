"""Shared pieces of the linear-head kernels: the input layout, row chunks and per-sample math.

Layout: features z [..., N, d] of all domains one after another (domain e holds `sizes[e]` rows),
head weight [..., C, d] and bias [..., C] (nn.Linear's layout), labels y [..., N] (class indices
for C >= 2, 0/1 floats for one logit); the leading dims (restarts trained together) are
flattened into one batch dim B. Per sample, with logits l = W z + b:
    p = softmax(l) (C >= 2) or sigmoid(l) (C = 1),   r = p - y (one-hot y),
    S = diag(p) - p p^T (C >= 2) or p (1 - p) (C = 1),   s = diag(S) = p (1 - p),
and every vector of head parameters is a [C, D] matrix, D = d + 1, bias in the last column.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: on the CPU, passes over the features go in chunks of rows of about this many entries, so
#: the several products of a pass find their chunk in cache (one read of z from memory)
CHUNK_ELEMENTS = 1 << 21
#: rows per block of the blocked matrix-vector products (`add_left_product`, `right_product`)
BLOCK_ROWS = 128
#: the most vectors (columns of u) `add_left_product` cuts into row blocks
LEFT_BLOCK_MAX_K = 8
BLOCKED_ENV_VAR = "DGALIGN_BLOCKED_PRODUCTS"


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor id from /proc/cpuinfo ("GenuineIntel", "AuthenticAMD"; "" if unknown),
    read once per process."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def default_blocked() -> bool:
    """Whether the row-blocked products run by default: DGALIGN_BLOCKED_PRODUCTS=1|0 if set,
    else on AMD CPUs only. Measured by `dgalign bench head-products` (docs/benchmarks.md): on
    an AMD EPYC, MKL's products with few vectors ran at half the speed of a read of the
    features and the blocks at memory speed; on an Intel Xeon MKL's own products ran at
    memory speed and the blocks were slower."""
    value = os.environ.get(BLOCKED_ENV_VAR, "").strip()
    if value in ("0", "1"):
        return value == "1"
    return cpu_vendor() == "AuthenticAMD"


#: whether `add_left_product` and `right_product` cut rows into blocks (CPU, one restart)
BLOCKED_PRODUCTS = default_blocked()


@dataclass
class Layout:
    """Canonical views [B, N, d], [B, C, d], [B, C], [B, N] and the domain bounds."""

    z: Tensor
    weight: Tensor
    bias: Tensor
    y: Tensor
    bounds: list[tuple[int, int]]
    batch: tuple[int, ...]

    @property
    def num_logits(self) -> int:
        return self.weight.shape[1]

    @property
    def width(self) -> int:
        return self.z.shape[2]

    def rows(self, per_row: int) -> int:
        """Rows per chunk when one row costs `per_row` entries (all rows off the CPU)."""
        if self.z.device.type != "cpu":
            return self.z.shape[1]
        return max(16, CHUNK_ELEMENTS // max(1, self.z.shape[0] * per_row))

    def chunks(self, e: int, rows: int) -> Iterator[tuple[int, int]]:
        start, stop = self.bounds[e]
        for a in range(start, stop, rows):
            yield a, min(a + rows, stop)

    def out(self, t: Tensor) -> Tensor:
        """[B, ...] -> [*batch, ...]."""
        return t.reshape(*self.batch, *t.shape[1:])


def layout(z: Tensor, weight: Tensor, bias: Tensor, y: Tensor, sizes: Sequence[int]) -> Layout:
    """Check the inputs of a head kernel (ValueError naming the problem) and flatten them."""
    if z.dim() < 2 or weight.dim() != z.dim() or bias.dim() != z.dim() - 1:
        raise ValueError(
            f"expected z [..., N, d], weight [..., C, d], bias [..., C], got shapes "
            f"{tuple(z.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}"
        )
    batch = tuple(z.shape[:-2])
    n, d = z.shape[-2:]
    c = weight.shape[-2]
    if weight.shape != (*batch, c, d) or bias.shape != (*batch, c):
        raise ValueError(
            f"weight must be [..., C, {d}] and bias [..., C] with z's leading dims {batch}, "
            f"got {tuple(weight.shape)}, {tuple(bias.shape)}"
        )
    if y.shape != (*batch, n):
        raise ValueError(f"labels must have shape {(*batch, n)}, got {tuple(y.shape)}")
    if c > 1 and (y.is_floating_point() or y.dtype == torch.bool):
        raise ValueError(f"class labels must be an integer tensor for C = {c}, got {y.dtype}")
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 1 or sum(sizes) != n:
        raise ValueError(f"domain sizes {sizes} must be positive and sum to N = {n}")
    if not z.is_floating_point():
        raise ValueError(f"features must be floating point, got {z.dtype}")
    b = 1
    for size in batch:
        b *= size
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    dtype = compute_dtype(z, weight)
    labels = y.reshape(b, n)
    if c == 1:
        labels = labels.to(dtype)
    return Layout(
        z.reshape(b, n, d).to(dtype),
        weight.reshape(b, c, d).to(dtype),
        bias.reshape(b, c).to(dtype),
        labels,
        bounds,
        batch,
    )


def compute_dtype(z: Tensor, weight: Tensor) -> torch.dtype:
    """The common floating dtype, at least float32 (curvature in half precision, e.g. under
    autocast, loses the small Hessian entries)."""
    dtype = torch.promote_types(z.dtype, weight.dtype)
    return torch.promote_types(dtype, torch.float32)


def probs(logits: Tensor) -> Tensor:
    """p = softmax(logits) over the last dim, or sigmoid for one logit."""
    return torch.sigmoid(logits) if logits.shape[-1] == 1 else torch.softmax(logits, -1)


def residual(p: Tensor, y: Tensor) -> Tensor:
    """r = p - y with y one-hot (class indices) or the 0/1 targets of one logit."""
    if p.shape[-1] == 1:
        return p - y[..., None]
    return p.scatter_add(-1, y[..., None], p.new_full((*y.shape, 1), -1.0))


def logit_vjp(p: Tensor, dp: Tensor) -> Tensor:
    """dL/dl from dL/dp through p = softmax(l) (or sigmoid)."""
    if p.shape[-1] == 1:
        return dp * p * (1 - p)
    return p * (dp - (dp * p).sum(-1, keepdim=True))


def apply_s(p: Tensor, a: Tensor) -> Tensor:
    """S a for vectors a [..., K, C] of every sample (p [..., C])."""
    pe = p[..., None, :]
    if p.shape[-1] == 1:
        return pe * (1 - pe) * a
    return pe * a - pe * (pe * a).sum(-1, keepdim=True)


def apply_s_vjp(p: Tensor, a: Tensor, g: Tensor) -> Tensor:
    """d/dp of sum_k <g_k, S(p) a_k> (a, g [..., K, C]): the derivative of S a through p."""
    pe = p[..., None, :]
    if p.shape[-1] == 1:
        return (g * a).sum(-2) * (1 - 2 * p)
    out = g * a - g * (pe * a).sum(-1, keepdim=True) - a * (pe * g).sum(-1, keepdim=True)
    return out.sum(-2)


def head_rows(
    zc: Tensor, weight: Tensor, bias: Tensor, y: Tensor, logits: Tensor, p: Tensor, r: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, p and r of a chunk of rows, written into the given views of the full arrays."""
    right_product(logits, bias, zc, weight)
    if logits.shape[-1] == 1:
        torch.sigmoid(logits, out=p)
        torch.sub(p, y[..., None], out=r)
    else:
        torch.softmax(logits, -1, out=p)
        r.copy_(p).scatter_add_(-1, y[..., None], p.new_full((*y.shape, 1), -1.0))
    return logits, p, r


def with_bias(weight_part: Tensor, bias_part: Tensor) -> Tensor:
    """[A, b] with the bias part as the last column: [..., C, d], [..., C] -> [..., C, d + 1]."""
    return torch.cat([weight_part, bias_part[..., None]], -1)


def augmented(zc: Tensor, buf: Tensor) -> Tensor:
    """[zc, 1] written into (a prefix of) the chunk buffer `buf` [B, rows, d + 1]."""
    out = buf[:, : zc.shape[1]]
    out[..., :-1] = zc
    out[..., -1] = 1
    return out


def linear_logits(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """z W^T + b for z [..., N, d], weight [..., C, d], bias [..., C] (one batched product)."""
    if z.dim() == 2:
        return torch.addmm(bias, z, weight.T)
    batch, (n, d), c = z.shape[:-2], z.shape[-2:], weight.shape[-2]
    out = torch.baddbmm(bias.reshape(-1, 1, c), z.reshape(-1, n, d), weight.reshape(-1, c, d).mT)
    return out.reshape(*batch, n, c)


def add_left_product(acc: Tensor, u: Tensor, x: Tensor, blocked: bool | None = None) -> None:
    """acc += u^T x for u [B, R, k] with few columns and x [B, R, d] (acc [B, k, d]).

    On an AMD EPYC MKL ran one [k, R] x [R, d] product with small k at about half the speed
    of a read of x (`dgalign bench head-products`); for one batch entry the rows go in blocks of
    `BLOCK_ROWS` as one batched product [R / b, k, b] x [R / b, b, d] summed over the
    blocks, which reads x at memory speed. Other cases (several batch entries, whose blocks
    do not form one batch dim, other devices, wide u) take the single product, and so do all
    when `blocked` (default `BLOCKED_PRODUCTS`) is False."""
    b, rows = x.shape[:2]
    k, step = u.shape[-1], BLOCK_ROWS
    m = rows // step * step
    blocked = BLOCKED_PRODUCTS if blocked is None else blocked
    if not blocked or b != 1 or x.device.type != "cpu" or k > LEFT_BLOCK_MAX_K or m < 2 * step:
        acc.baddbmm_(u.mT, x)
        return
    blocks = torch.bmm(u[0, :m].unflatten(0, (-1, step)).mT, x[0, :m].unflatten(0, (-1, step)))
    acc[0] += blocks.sum(0)
    if m < rows:
        acc.baddbmm_(u[:, m:].mT, x[:, m:])


def right_product(
    out: Tensor, bias: Tensor, x: Tensor, v: Tensor, blocked: bool | None = None
) -> Tensor:
    """out = bias + x v^T for x [B, R, d], v [B, k, d], bias [B, k], written into out [B, R, k].

    For one vector (k = 1) MKL's matrix-vector path read x at about half the speed of a
    batched product on an AMD EPYC (`dgalign bench head-products`); for one batch entry on the
    CPU the rows go in blocks of `BLOCK_ROWS`, one [R / b] batch of [b, d] x [d, 1] products
    (when `blocked`, default `BLOCKED_PRODUCTS`). Two or more vectors already run at memory
    speed as one product."""
    b, rows, d = x.shape
    step = BLOCK_ROWS
    m = rows // step * step
    blocked = BLOCKED_PRODUCTS if blocked is None else blocked
    if not blocked or b != 1 or v.shape[1] != 1 or x.device.type != "cpu" or m < 2 * step:
        return torch.baddbmm(bias[:, None, :], x, v.mT, out=out)
    blocks = out[0, :m].unflatten(0, (-1, step))
    vs = v[0].mT.expand(m // step, d, 1)
    torch.baddbmm(bias[0].expand(1, 1, 1), x[0, :m].unflatten(0, (-1, step)), vs, out=blocks)
    if m < rows:
        torch.baddbmm(bias[:, None, :], x[:, m:], v.mT, out=out[:, m:])
    return out
