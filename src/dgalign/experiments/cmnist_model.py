"""The protocol's MLP, 392 -> 390 -> ReLU -> 390 -> ReLU -> Linear(390, 1), as R restarts at once.

Batched layout: weights w_l [R, in, out], biases b_l [R, 1, out], so layer l of all restarts is
one `torch.baddbmm(b_l, h, w_l)` = h @ w_l + b_l on inputs h [R, n, in]. Restart r's slices are
exactly the transposed weights of its `nn.Linear` modules; gradients of sum_r L_r(theta_r) are
the per-restart gradients, and Adam is elementwise, so training the batch trains every restart
as if alone. `init_restart` draws one restart's weights as the scripts do: the three
`nn.Linear` constructors (default Kaiming init, consumed and discarded) then Xavier-uniform
weights and zero biases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IN_DIM = 2 * 14 * 14
HIDDEN = 390
LAYERS = (("w1", "b1"), ("w2", "b2"), ("w3", "b3"))
HEAD = ("w3", "b3")


def _linear_default(fan_in: int, fan_out: int, gen: torch.Generator) -> None:
    """Consume the RNG as `nn.Linear(fan_in, fan_out)`'s constructor does."""
    weight = torch.empty(fan_out, fan_in)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    bound = 1 / math.sqrt(fan_in)
    torch.empty(fan_out).uniform_(-bound, bound, generator=gen)


def init_restart(gen: torch.Generator, hidden: int = HIDDEN, in_dim: int = IN_DIM) -> dict:
    """One restart's weights in `nn.Linear` layout {"w1": [H, in], "b1": [H], ...}."""
    dims = [(in_dim, hidden), (hidden, hidden), (hidden, 1)]
    for fan_in, fan_out in dims:
        _linear_default(fan_in, fan_out, gen)
    state = {}
    for (w, b), (fan_in, fan_out) in zip(LAYERS, dims, strict=True):
        weight = torch.empty(fan_out, fan_in)
        nn.init.xavier_uniform_(weight, generator=gen)
        state[w], state[b] = weight, torch.zeros(fan_out)
    return state


def stack_restarts(states: list[dict], dtype: torch.dtype, device: torch.device) -> dict:
    """Per-restart `nn.Linear`-layout states -> batched leaf tensors (requires_grad)."""
    params = {}
    for w, b in LAYERS:
        params[w] = torch.stack([s[w].T for s in states]).to(device, dtype).contiguous()
        params[b] = torch.stack([s[b][None, :] for s in states]).to(device, dtype).contiguous()
    return {k: v.requires_grad_() for k, v in params.items()}


def unstack(params: dict, r: int) -> dict:
    """Restart r's weights in `nn.Linear` layout, detached, on the CPU."""
    state = {}
    for w, b in LAYERS:
        state[w] = params[w][r].detach().T.contiguous().cpu()
        state[b] = params[b][r, 0].detach().clone().cpu()
    return state


def features(params: dict, x: Tensor) -> Tensor:
    """Penultimate features relu(relu(x w1 + b1) w2 + b2), x [R, n, 392] -> [R, n, H]."""
    h = torch.baddbmm(params["b1"], x, params["w1"]).relu_()
    return torch.baddbmm(params["b2"], h, params["w2"]).relu_()


def head(params: dict, z: Tensor) -> Tensor:
    """Logits z w3 + b3, [R, n, H] -> [R, n, 1]."""
    return torch.baddbmm(params["b3"], z, params["w3"])


def bce(logits: Tensor, y: Tensor) -> Tensor:
    """Mean binary cross-entropy with logits per restart: logits [R, n, 1], y [R, n] -> [R]."""
    return F.binary_cross_entropy_with_logits(logits[..., 0], y, reduction="none").mean(-1)


def sign_accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Per-restart accuracy of the rule logit > 0, [R]."""
    return ((logits[..., 0] > 0).to(y.dtype) == y).to(y.dtype).mean(-1)


def squared_norm(params: dict, biases: bool = True) -> Tensor:
    """Per-restart sum of squared parameters [R] (weights only with `biases=False`)."""
    names = [n for pair in LAYERS for n in pair if biases or n.startswith("w")]
    return sum(params[n].square().flatten(1).sum(1) for n in names)


class Body:
    """The two hidden layers of R restarts with a hand-written backward and reused buffers.

    Biases are folded into the products: inputs carry a ones column, X~ = [X, 1] (built once),
    and each hidden layer's extended weight [[w, 0], [b, 1]] also outputs a constant-1 column,
    so h~_l = relu(h~_{l-1} W~_l) = [h_l, 1] and every bias gradient is a row of a weight
    gradient product. Backward from dL/dz (z = h_2): G_2 = dz * 1[h_2 > 0] (one fused
    `threshold_backward` pass), dW~_2 = h~_1^T G~_2, G_1 = (G~_2 W~_2^T) * 1[h_1 > 0],
    dW~_1 = X~^T G~_1; the constant column's gradients are dropped. Per step that is the eight
    products of plain autograd plus four elementwise passes (two ReLUs, two masks), with no
    bias broadcasts or bias sums and no new [R, n, H] tensors (autograd allocates about six).
    """

    def __init__(self, x: Tensor) -> None:
        r, n, d = x.shape
        self.x = torch.cat([x, x.new_ones(r, n, 1)], 2)  # X~
        self.h1: Tensor | None = None
        self.d = d

    def _buffers(self, hidden: int) -> None:
        if self.h1 is None or self.h1.shape[2] != hidden + 1:
            r, n, _ = self.x.shape
            self.h1, self.h2, self.g2, self.g1 = (
                self.x.new_empty(r, n, hidden + 1) for _ in "1234"
            )
            self.g2[..., hidden] = 0

    def _extended(self, w: Tensor, b: Tensor) -> Tensor:
        """[[w, 0], [b, 1]]: [R, in + 1, out + 1]."""
        r = w.shape[0]
        top = torch.cat([w, b], 1)
        col = torch.zeros(r, top.shape[1], 1, dtype=w.dtype, device=w.device)
        col[:, -1] = 1
        return torch.cat([top, col], 2)

    @torch.no_grad()
    def forward(self, params: dict) -> Tensor:
        """z = h_2 [R, n, H] (a view of a reused buffer: valid until the next call)."""
        hidden = params["w1"].shape[2]
        self._buffers(hidden)
        self.w1 = self._extended(params["w1"], params["b1"])
        self.w2 = self._extended(params["w2"], params["b2"])
        torch.bmm(self.x, self.w1, out=self.h1).relu_()
        torch.bmm(self.h1, self.w2, out=self.h2).relu_()
        return self.h2[..., :hidden]

    @torch.no_grad()
    def backward(self, params: dict, dz: Tensor) -> None:
        """Add the gradients of the layers below z, given dL/dz, to the params' `.grad`."""
        hidden = dz.shape[2]
        tb = torch.ops.aten.threshold_backward.grad_input
        tb(dz, self.h2[..., :hidden], 0, grad_input=self.g2[..., :hidden])
        dw2 = torch.bmm(self.h1.transpose(1, 2), self.g2)
        torch.bmm(self.g2, self.w2.transpose(1, 2), out=self.g1)
        tb(self.g1, self.h1, 0, grad_input=self.g1)
        dw1 = torch.bmm(self.x.transpose(1, 2), self.g1)
        for (w, b), dw, d_in in ((("w1", "b1"), dw1, self.d), (("w2", "b2"), dw2, hidden)):
            for name, part in ((w, dw[:, :d_in, :hidden]), (b, dw[:, d_in:, :hidden])):
                p = params[name]
                p.grad = part.clone() if p.grad is None else p.grad.add_(part)


class RestartMLP(nn.Module):
    """One restart as an ordinary module (`featurizer` -> `classifier`), e.g. for attacks."""

    def __init__(self, state: dict) -> None:
        super().__init__()
        hidden, in_dim = state["w1"].shape
        lin1, lin2 = nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden)
        self.featurizer = nn.Sequential(lin1, nn.ReLU(), lin2, nn.ReLU())
        self.classifier = nn.Linear(hidden, 1)
        for (w, b), lin in zip(LAYERS, (lin1, lin2, self.classifier), strict=True):
            lin.weight.data.copy_(state[w])
            lin.bias.data.copy_(state[b])

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.featurizer(x.reshape(x.shape[0], -1)))
