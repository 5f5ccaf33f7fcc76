"""Training R restarts of one table row at once, the Colored MNIST scripts' loop.

Per step t (full batch, all envs' images every step), for every restart r:
    loss_r = mean_e L_e + l2 * ||theta_r||^2 + w_t P_r,   w_t = W if t >= anneal else 1,
    loss_r /= w_t when w_t > 1 (the whole loss rescaled, as in the scripts; ERM: no penalty);
Adam (lr 0.00049) on sum_r loss_r, whose gradient w.r.t. restart r's slices is grad loss_r.
||theta||^2 covers weights and biases (`l2_biases`; the scripts loop over `mlp.parameters()`).
P_r = sum_k weight_k term_k is the row's registered algorithm's penalty (`head_penalties`,
with the row's hyper-parameters, see `cmnist_rows`); w_t is the protocol's `PenaltySchedule`.

What is batched: everything. The R restarts' data are stacked ([R, n, 392]); the two hidden
layers run as `cmnist_model.Body` (batched products with folded biases and a hand-written
backward into reused buffers); the head and its penalties are one closed-form autograd node of
`dgalign.curvature` on the features z (a leaf) with a leading restart dim, the losses plain
autograd; Body.backward then takes dL/dz down to the hidden layers. `step_times` are the wall
time of these training steps (CUDA events on a GPU, read once after the last step).

Every `dynamics_every` steps and at the last step, with the weights before that step's update
(as the scripts report them): test accuracy and loss, gray-test accuracy, and the exact
||H_0 - H_1||_F of the training envs' head Hessians. Training accuracies are recorded every
step; `final` holds the last step's values. The weights returned are those after the last
update.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dgalign.algorithms.schedule import PenaltySchedule
from dgalign.curvature import head_hessian_distance
from dgalign.experiments import cmnist_model as M
from dgalign.experiments.cmnist_data import RestartData
from dgalign.experiments.cmnist_model import bce, sign_accuracy
from dgalign.experiments.cmnist_rows import Row
from dgalign.utils.progress import progress_bar
from dgalign.utils.runtime import StepTimer


@dataclass(frozen=True)
class Protocol:
    """Optimisation constants of the protocol (defaults: the IRM scripts' tuned values)."""

    steps: int = 501
    anneal_iters: int = 190
    penalty_weight: float = 91257.18613115903
    lr: float = 0.0004898536566546834
    l2: float = 0.00110794568
    l2_biases: bool = True
    hidden: int = M.HIDDEN

    def schedule(self) -> PenaltySchedule:
        """w_t = 1 before `anneal_iters`, then `penalty_weight`, the loss divided by w_t > 1,
        no optimizer reset."""
        return PenaltySchedule(
            self.anneal_iters, self.penalty_weight, before=1.0, reset_optimizer=False, rescale=True
        )

    def weight(self, step: int) -> float:
        """Penalty weight w_t: 1 before `anneal_iters`, then `penalty_weight`."""
        return self.schedule().weight(step)


@dataclass
class Trained:
    """Per-restart results (`records[r]`, JSON-ready) and final weights (`states[r]`)."""

    records: list[dict]
    states: list[dict]
    step_times: list[float] = field(default_factory=list)


def stack_env(restarts: list[RestartData], name: str, dtype, device) -> tuple[Tensor, Tensor]:
    """Env `name` of every restart: inputs [R, n, 392] and labels [R, n]."""
    x = torch.stack([r[name].inputs(dtype) for r in restarts]).to(device)
    y = torch.stack([r[name].labels for r in restarts]).to(device, dtype)
    return x, y


class _Trace:
    """Per-step values, kept as [R] tensors on the training device (no copy, no sync per
    step) and moved to the host once, as lists, when first read."""

    def __init__(self) -> None:
        self.values: dict[str, list[Tensor]] = {}
        self._lists: dict[str, list[list[float]]] | None = None

    def add(self, **kw: Tensor) -> None:
        for k, v in kw.items():
            self.values.setdefault(k, []).append(v.detach().to(torch.float64))
        self._lists = None

    def host_lists(self) -> dict[str, list[list[float]]]:
        """{key: [restart][step]}, one copy to the host per key."""
        if self._lists is None:
            self._lists = {}
            for k, vs in self.values.items():
                self._lists[k] = torch.stack(vs).cpu().T.tolist()
        return self._lists

    def restart(self, r: int) -> dict[str, list[float]]:
        return {k: v[r] for k, v in self.host_lists().items()}


def evaluate(params: dict, xs: tuple[Tensor, ...], ys: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """Test accuracy and loss, gray-test accuracy per restart (no gradients)."""
    test = M.head(params, M.features(params, xs[0]))
    gray = M.head(params, M.features(params, xs[1]))
    return {
        "test_acc": sign_accuracy(test, ys[0]),
        "test_loss": bce(test, ys[0]),
        "gray_acc": sign_accuracy(gray, ys[1]),
    }


def hessian_distance(zs: list[Tensor], logits: list[Tensor]) -> Tensor:
    """Exact ||H_0 - H_1||_F of the head Hessians of the two training envs, per restart."""
    fn = torch.func.vmap(head_hessian_distance)
    return fn(zs[0], logits[0], zs[1], logits[1])


class _Penalty:
    """The row's penalty on the batched head: P = sum_k weight_k term_k (None for ERM)."""

    def __init__(self, row: Row, label_shift: bool, mean: str) -> None:
        self.cls = row.cls
        self.hparams = row.hparams(label_shift, mean)
        self.active = hasattr(self.cls, "head_penalties")
        if self.active:
            self.weights = self.cls.term_weights(self.hparams, 1)

    def __call__(
        self, params: dict, z: Tensor, y: Tensor, sizes: list[int]
    ) -> tuple[Tensor, Tensor | None]:
        if not self.active:
            return M.head(params, z), None
        weight, bias = params["w3"].mT, params["b3"][:, 0]
        logits, terms = self.cls.head_penalties(z, weight, bias, y, sizes, self.hparams)
        return logits, sum(self.weights[k] * v for k, v in terms.items())


def train_restarts(
    restarts: list[RestartData],
    inits: list[dict],
    method: Row,
    proto: Protocol,
    *,
    label_shift: bool = False,
    mean: str = "envs",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    dynamics_every: int = 5,
    progress: bool | None = None,
    desc: str = "",
) -> Trained:
    """Train every restart of `restarts` (initial weights `inits`) with the table row `method`
    (module docstring)."""
    device = torch.device(device)
    x_tr = [stack_env(restarts, e, dtype, device) for e in ("env0", "env1")]
    sizes = [x.shape[1] for x, _ in x_tr]
    x_train = torch.cat([x for x, _ in x_tr], 1)
    ys = [y for _, y in x_tr]
    y_train = torch.cat(ys, 1)
    penalty = _Penalty(method, label_shift, mean)
    schedule = proto.schedule()
    x_eval, y_eval = zip(
        *(stack_env(restarts, e, dtype, device) for e in ("test", "gray")), strict=True
    )
    del x_tr

    params = M.stack_restarts(inits, dtype, device)
    body = M.Body(x_train)
    del x_train
    optimizer = torch.optim.Adam(params.values(), lr=proto.lr)
    trace, dyn, hd_steps, timer = _Trace(), _Trace(), [], StepTimer(device)
    bar = progress_bar(range(proto.steps), desc=desc or method.name, progress=progress, leave=False)
    for step in bar:
        timer.start()
        if step % dynamics_every == 0 or step == proto.steps - 1:
            before = {k: v.detach().clone() for k, v in params.items()}
        z = body.forward(params).requires_grad_()  # a leaf: the body's backward is by hand
        logits, pen = penalty(params, z, y_train, sizes)
        zs, lgs = list(z.split(sizes, 1)), list(logits.split(sizes, 1))
        nlls = [bce(lg, y) for lg, y in zip(lgs, ys, strict=True)]
        nll = torch.stack(nlls).mean(0)
        loss = schedule.objective(
            nll + proto.l2 * M.squared_norm(params, proto.l2_biases), pen, step
        )
        pen = torch.zeros_like(nll) if pen is None else pen
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        body.backward(params, z.grad)
        optimizer.step()
        timer.stop()
        trace.add(
            env0_acc=sign_accuracy(lgs[0], ys[0]),
            env1_acc=sign_accuracy(lgs[1], ys[1]),
            train_nll=nll,
            penalty=pen,
        )
        if step % dynamics_every == 0 or step == proto.steps - 1:
            with torch.no_grad():  # the pre-update model (weights before this step's update)
                dyn.add(
                    hessian_distance=hessian_distance(zs, lgs), **evaluate(before, x_eval, y_eval)
                )
            hd_steps.append(step)
    bar.close()
    records = []
    for r in range(len(restarts)):
        per_step = trace.restart(r)
        dynamics = {"step": hd_steps, **dyn.restart(r)}
        final = {k: v[-1] for k, v in {**per_step, **dynamics}.items() if k != "step"}
        final["train_acc"] = (final["env0_acc"] + final["env1_acc"]) / 2
        records.append(
            {
                "method": method.name,
                "algorithm": method.algorithm,
                "final": final,
                "per_step": per_step,
                "dynamics": dynamics,
                "env_sizes": sizes,
            }
        )
    states = [M.unstack(params, r) for r in range(len(restarts))]
    return Trained(records, states, timer.times())
