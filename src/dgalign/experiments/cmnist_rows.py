"""The rows of the Colored MNIST tables: registered algorithms with the scripts' options.

A row is (registered algorithm, hyper-parameter overrides). The scripts' penalty forms are
options of the algorithms' own penalties (`head_penalties`, the same closed forms DomainBed
training uses): sum over the two envs and nothing detached for the alignment methods (HGP,
Hutchinson, HessianDiag, CMA), the squared dummy-scale gradient for IRM, (R_0 - R_1)^2 for
V-REx, sums and no moving average for Fishr; every term weight 1 (0 in the ablations). The
protocol's schedule (`cmnist_train.Protocol`: weight 1, then W with the loss divided by W)
replaces each algorithm's own annealing; `--mean-term` sets `mean_term` where the algorithm has
one. Hutchinson draws 150 probes per estimate (200 with label shift), as the scripts do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams, override

DATASET = "ColoredMNIST"
SCRIPT_ALIGNMENT = {
    "hess_weight": 1.0,
    "grad_weight": 1.0,
    "detach_mean": False,
    "reduction": "sum",
}


@dataclass(frozen=True)
class Row:
    """A table row: its name, the registered algorithm and the overrides (with label shift
    also `label_shift_overrides`)."""

    name: str
    algorithm: str
    overrides: dict[str, Any] = field(default_factory=dict)
    label_shift_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def cls(self) -> type:
        return algorithms.get(self.algorithm)

    def hparams(self, label_shift: bool = False, mean_term: str = "envs") -> dict[str, Any]:
        """The algorithm's defaults with this row's overrides (validated by the registry)."""
        hp = default_hparams(self.algorithm, DATASET)
        over = dict(self.overrides)
        if label_shift:
            over.update(self.label_shift_overrides)
        if "mean_term" in hp:
            over["mean_term"] = mean_term
        return override(self.algorithm, DATASET, hp, over)


def _rows(*rows: Row) -> dict[str, Row]:
    return {r.name: r for r in rows}


_CMA_SCRIPT = {k: SCRIPT_ALIGNMENT[k] for k in ("hess_weight", "grad_weight", "reduction")}
_PROBES = ({**SCRIPT_ALIGNMENT, "n_probes": 150}, {"n_probes": 200})

METHODS = _rows(
    Row("ERM", "ERM"),
    Row("IRM", "IRM", {"penalty_form": "squared"}),
    Row("VREx", "VREx", {"penalty_form": "squared_difference"}),
    Row("Fishr", "Fishr", {"penalty_form": "sum", "ema": 0.0}),
    Row("HGP", "HGP", SCRIPT_ALIGNMENT),
    Row("Hutchinson", "Hutchinson", *_PROBES),
    Row("HessianDiag", "HessianDiag", SCRIPT_ALIGNMENT),
    Row("HessianDiag-E150", "HessianDiag", {**SCRIPT_ALIGNMENT, "expected_probes": 150}),
    Row("CMA", "CMA", {**_CMA_SCRIPT, "hessian_mode": "full"}),
)
ABLATIONS = _rows(
    Row("HGP(alpha=0)", "HGP", {**SCRIPT_ALIGNMENT, "hess_weight": 0.0}),
    Row("HGP(beta=0)", "HGP", {**SCRIPT_ALIGNMENT, "grad_weight": 0.0}),
    Row("Hutchinson(alpha=0)", "Hutchinson", {**_PROBES[0], "hess_weight": 0.0}, _PROBES[1]),
    Row("Hutchinson(beta=0)", "Hutchinson", {**_PROBES[0], "grad_weight": 0.0}, _PROBES[1]),
)
MEAN_TERMS = ("envs", "pooled")


#: the QUICK run's rows: the paper's core comparison (no penalty, IRM, the two Hessian-alignment
#: methods and the closed form that tracks Hutchinson)
CORE = ("ERM", "IRM", "HGP", "Hutchinson", "HessianDiag-E150")


def all_rows() -> dict[str, Row]:
    """The main rows and the ablation rows, by name."""
    return {**METHODS, **ABLATIONS}
