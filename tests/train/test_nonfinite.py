"""NaN / Inf: caught in the weights after the last update, and never written as a bare `NaN`
token (records are strict JSON that DomainBed's reader still reads).

Before, `lr` Infinity with `--steps 1` exited 0 and wrote `done` and a model.pt of NaN weights
(the loss of the step was finite; nothing looked at the weights after the update); records
could hold `NaN` / `Infinity`, which strict JSON readers reject.
"""

import json
import math

import pytest
import torch

from dgalign.algorithms.erm import ERM
from dgalign.algorithms.registry import _REGISTRY
from dgalign.errors import TrainingDiverged
from dgalign.runs.directory import RunDirectory, read_results
from dgalign.train import RunConfig, loop, run_training
from dgalign.utils.records import decode_record, encode_record


class PoisonedAt(ERM):
    """ERM whose update at step `AT` leaves a NaN in the weights (its loss is finite)."""

    DESCRIPTION = "test only"
    AT = 0

    def update(self, minibatches):
        out = super().update(minibatches)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.AT + 1:
            with torch.no_grad():
                next(self.parameters()).view(-1)[0] = float("nan")
        return out


def _config(tmp_path, fast_hparams, algorithm, **kw):
    args = dict(
        dataset="Spurious28",
        algorithm=algorithm,
        output_dir=str(tmp_path / "run"),
        test_envs=[2],
        hparams=fast_hparams,
        steps=7,
        checkpoint_freq=3,
    )
    return RunConfig(**{**args, **kw})


@pytest.mark.parametrize(("steps", "at", "kept"), [(1, 0, []), (7, 6, [0, 3])])
def test_nan_weights_after_the_last_update_stop_the_run(
    tmp_path, fast_hparams, monkeypatch, steps, at, kept
):
    algorithm = type(f"PoisonedAt{at}", (PoisonedAt,), {"AT": at})
    monkeypatch.setitem(_REGISTRY, algorithm.__name__, algorithm)
    config = _config(tmp_path, fast_hparams, algorithm.__name__, steps=steps)
    with pytest.raises(TrainingDiverged, match=f"weights became NaN or infinite at step {at}"):
        run_training(config, progress=False)
    rundir = RunDirectory(config.output_dir)
    assert not rundir.is_done() and not rundir.model.exists()
    assert [r["step"] for r in rundir.read_records()] == kept


def test_nonfinite_values_are_strict_json_with_a_flag(tmp_path, fast_hparams, monkeypatch):
    """A diagnostic that overflows is written as null and named under `nonfinite`; our readers
    restore it, a strict reader accepts every line, DomainBed's plain json.loads reads it."""
    monkeypatch.setattr(
        loop,
        "curvature_diagnostics",
        lambda algorithm, batches: {"hess_dist": math.inf, "grad_dist": math.nan},
    )
    config = _config(tmp_path, fast_hparams, "ERM")
    run_training(config, progress=False)
    rundir = RunDirectory(config.output_dir)
    lines = rundir.results.read_text().splitlines()

    def strict(token):
        raise ValueError(f"non-standard JSON token {token}")

    for line in lines:
        record = json.loads(line, parse_constant=strict)  # raises on NaN / Infinity
        assert record["hess_dist"] is None and record["grad_dist"] is None
        assert record["nonfinite"] == {"hess_dist": "Infinity", "grad_dist": "NaN"}
        assert 0.0 <= record["env0_out_acc"] <= 1.0  # what model selection reads: numbers
    ours = rundir.read_records()
    assert ours[0]["hess_dist"] == math.inf and math.isnan(ours[0]["grad_dist"])
    assert "nonfinite" not in ours[0]
    report, bad = read_results(rundir.results)
    assert bad == 0 and report[0]["hess_dist"] == math.inf


def test_encoding_round_trips_nested_values():
    record = {"a": 1.0, "b": [0.5, -math.inf], "c": {"d": math.nan, "e": "x"}, "f": None}
    encoded = encode_record(record)
    json.dumps(encoded, allow_nan=False)
    assert encoded["nonfinite"] == {"b.1": "-Infinity", "c.d": "NaN"}
    decoded = decode_record(json.loads(json.dumps(encoded)))
    assert decoded["b"] == [0.5, -math.inf] and math.isnan(decoded["c"]["d"])
    assert decoded["f"] is None and decoded["a"] == 1.0 and "nonfinite" not in decoded
    assert encode_record({"a": 1.0}) == {"a": 1.0}  # finite records are unchanged
