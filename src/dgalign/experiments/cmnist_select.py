"""`dgalign reproduce cmnist --select RULE`: HessianDiag's curvature weight chosen per restart
from the training environments alone.

Per restart k, each training env (env0, env1) is cut into a fit part (its first 1 - `HOLDOUT`
rows; the envs are already a random permutation of the pool) and a validation part (the rest).
Every weight lambda of `GRID` (`curv_weight`, the other options those of the HessianDiag row)
is trained on the two fit parts under the protocol; the rule scores the final model on the two
validation parts:
    worst-env  max over lambda of min_e acc_e (DomainBed's training-domain validation, the
               worst training env);
    env-gap    min over lambda of |acc_0 - acc_1| among the candidates whose worst validation
               accuracy is at least `MIN_ACCURACY` (all of them when none is): the
               invariance the penalties aim at, measured on held-out training data. A model
               that ignores colour has the same accuracy in both envs (same digits, same label
               noise); one that reads colour is better in env1, whose colour agrees more often.
Ties go to the smaller lambda. The chosen lambda is then trained on the whole training envs
(restart k's own data and initial weights), the row `selected_name(rule)`.

No test data is read: the candidates' data are `holdout_split(restart)`, which holds only
slices of env0 and env1 (the test and gray envs are not passed to training or scoring); a
test poisons the test labels and checks that the choice is unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from dgalign.errors import ConfigError
from dgalign.experiments import cmnist_model as M
from dgalign.experiments.cmnist_data import ColoredEnv, RestartData
from dgalign.experiments.cmnist_layout import method_dir, restart_paths
from dgalign.experiments.cmnist_model import sign_accuracy
from dgalign.experiments.cmnist_rows import METHODS, Row
from dgalign.experiments.cmnist_train import stack_env, train_restarts
from dgalign.utils.io import atomic_torch_save, atomic_write_json
from dgalign.utils.seeding import seed_hash

LOG = logging.getLogger("dgalign.reproduce")
#: candidate curv_weight values: off, then 1/1500, 1/150 (the E150 point), 1/15 (hess_weight = 1)
GRID = (0.0, 1 / 1500, 1 / 150, 1 / 15)
RULES = ("env-gap", "worst-env")
HOLDOUT = 0.2
MIN_ACCURACY = 0.6
BASE = METHODS["HessianDiag"]
SELECTION_DIR = "selection"


def selected_name(rule: str) -> str:
    """The table row of the selected weight, e.g. HessianDiag-sel(env-gap)."""
    return f"HessianDiag-sel({rule})"


def check_rule(rule: str) -> None:
    """ConfigError (one line) for an unknown rule."""
    if rule not in RULES:
        raise ConfigError(f"--select must be one of {RULES}, got {rule!r}")


def candidate(weight: float) -> Row:
    """The HessianDiag row with curv_weight = `weight`."""
    overrides = {**BASE.overrides, "curv_weight": float(weight)}
    return Row(f"HessianDiag(curv={weight:.6g})", BASE.algorithm, overrides)


def _part(env: ColoredEnv, rows: slice) -> ColoredEnv:
    colors = None if env.colors is None else env.colors[rows]
    return ColoredEnv(env.images[rows], env.labels[rows], colors, env.digits[rows])


def holdout_split(restart: RestartData, holdout: float = HOLDOUT) -> RestartData:
    """(fit0, fit1, val0, val1): the training envs' fit parts in the env0 / env1 slots and
    their validation parts in the test / gray slots. Nothing of the test or gray env."""
    fits, vals = [], []
    for name in ("env0", "env1"):
        env = restart[name]
        cut = len(env) - max(1, round(holdout * len(env)))
        if cut < 1:
            raise ConfigError(f"{name} has {len(env)} images: too few to hold out {holdout}")
        fits.append(_part(env, slice(0, cut)))
        vals.append(_part(env, slice(cut, None)))
    return RestartData((fits[0], fits[1], vals[0], vals[1]))


def validation_accuracy(states: list[dict], splits: list[RestartData]) -> list[list[float]]:
    """[restart][e]: accuracy of each trained state on its split's validation part of env e."""
    params = {k: v.detach() for k, v in M.stack_restarts(states, torch.float32, "cpu").items()}
    out = []
    for slot in ("test", "gray"):  # the slots `holdout_split` puts val0 and val1 in
        x, y = stack_env(splits, slot, torch.float32, "cpu")
        with torch.no_grad():
            out.append(sign_accuracy(M.head(params, M.features(params, x)), y).tolist())
    return [list(accs) for accs in zip(*out, strict=True)]


def choose(scores: dict[float, list[float]], rule: str) -> float:
    """The weight the rule picks from {weight: [acc_0, acc_1]} (module docstring)."""
    check_rule(rule)
    grid = sorted(scores)
    if rule == "worst-env":
        return max(grid, key=lambda w: (min(scores[w]), -w))
    ok = [w for w in grid if min(scores[w]) >= MIN_ACCURACY] or grid
    return min(ok, key=lambda w: (abs(scores[w][0] - scores[w][1]), w))


def _train(config, rows_data, inits, row: Row, ks: list[int], dynamics_every: int):
    torch.manual_seed(seed_hash(config.seed, "select", row.name, tuple(ks)))
    return train_restarts(
        rows_data,
        inits,
        row,
        config.protocol,
        label_shift=config.data.label_shift,
        mean=config.mean,
        dtype=getattr(torch, config.dtype),
        device=config.device,
        dynamics_every=dynamics_every,
        progress=config.progress,
        desc=f"select {row.name}",
    )


def candidate_scores(config, root: Path, data, inits) -> list[dict[float, list[float]]]:
    """[restart]{weight: [val acc env0, val acc env1]}, training the missing candidates (saved
    under <root>/selection/, so an interrupted selection resumes)."""
    splits = [holdout_split(d) for d in data]
    base = Path(root) / SELECTION_DIR
    out: list[dict[float, list[float]]] = [{} for _ in data]
    for weight in GRID:
        row = candidate(weight)
        todo = [k for k in range(len(data)) if not restart_paths(base, row.name, k)[0].exists()]
        if todo:
            LOG.info("selection: training %s on restarts %s", row.name, todo)
            fit = [splits[k] for k in todo]
            # dynamics (on the validation parts) only at the first and last steps
            trained = _train(
                config, fit, [inits[k] for k in todo], row, todo, config.protocol.steps
            )
            accs = validation_accuracy(trained.states, [splits[k] for k in todo])
            for k, acc in zip(todo, accs, strict=True):
                record = {"restart": k, "curv_weight": weight, "val_acc": acc}
                atomic_write_json(restart_paths(base, row.name, k)[0], record)
        for k in range(len(data)):
            saved = json.loads(restart_paths(base, row.name, k)[0].read_text())
            out[k][weight] = saved["val_acc"]
    return out


def run_selection(config, root: Path, data, inits, rule: str) -> list[dict]:
    """Choose each restart's weight by `rule` and train it on the whole training envs; the
    records (with a "selection" entry) go to the row `selected_name(rule)`."""
    check_rule(rule)
    name = selected_name(rule)
    scores = candidate_scores(config, root, data, inits)
    chosen = [choose(s, rule) for s in scores]
    todo = [k for k in range(len(data)) if not restart_paths(root, name, k)[0].exists()]
    for weight in sorted({chosen[k] for k in todo}):
        ks = [k for k in todo if chosen[k] == weight]
        trained = _train(
            config,
            [data[k] for k in ks],
            [inits[k] for k in ks],
            candidate(weight),
            ks,
            config.dynamics_every,
        )
        for k, record, state in zip(ks, trained.records, trained.states, strict=True):
            record.update(
                method=name,
                restart=k,
                batch_restarts=len(ks),
                selection={
                    "rule": rule,
                    "holdout": HOLDOUT,
                    "chosen": weight,
                    "val_acc": {f"{w:.6g}": scores[k][w] for w in GRID},
                },
                step_time=float(sum(trained.step_times) / len(trained.step_times)),
                device=str(config.device),
                quick=config.quick,
            )
            json_path, pt_path = restart_paths(root, name, k)
            atomic_torch_save(pt_path, {"state": state, "restart": k, "method": name})
            atomic_write_json(json_path, record)
    records = [json.loads(restart_paths(root, name, k)[0].read_text()) for k in range(len(data))]
    atomic_write_json(method_dir(root, name) / "results.json", {"restarts": records})
    return records
