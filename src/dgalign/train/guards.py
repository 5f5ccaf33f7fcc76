"""What every checkpoint of a run checks and writes besides its record: that the logged
values and the weights are finite (TrainingDiverged otherwise), and DomainBed's model file."""

from __future__ import annotations

from typing import Any

import torch

from dgalign.errors import TrainingDiverged
from dgalign.runs.directory import RunDirectory
from dgalign.train.logs import LogWindow
from dgalign.utils.io import atomic_torch_save


def check_finite_logs(window: LogWindow, records: list, rundir: RunDirectory) -> None:
    """TrainingDiverged naming the first step and logged value of the window that is NaN or
    infinite (read once, at the checkpoint)."""
    bad = window.first_non_finite()
    if bad is None:
        return
    last = records[-1]["step"] if records else None
    raise TrainingDiverged(
        f"{bad.key} became {bad.value} at step {bad.step}; the {len(records)} records up to "
        f"step {last} are kept in {rundir.results}; lower the learning rate "
        "(--hparams '{\"lr\": ...}') or the penalty weights"
    )


def check_finite_parameters(algorithm, step: int, records: list, rundir: RunDirectory) -> None:
    """TrainingDiverged when a parameter or floating buffer of `algorithm` is NaN or infinite
    after step `step`'s update (checked before its record, checkpoint or model is written)."""
    tensors = [t for t in algorithm.state_dict().values() if torch.is_floating_point(t)]
    if not tensors or bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
        return
    last = records[-1]["step"] if records else None
    raise TrainingDiverged(
        f"the model's weights became NaN or infinite at step {step}; the {len(records)} "
        f"records up to step {last} are kept in {rundir.results}; lower the learning rate "
        "(--hparams '{\"lr\": ...}') or the penalty weights"
    )


def save_model(path, model, dataset, args: dict[str, Any]) -> None:
    """Write `model` as DomainBed's model file: args, shapes, hparams and the state dict."""
    atomic_torch_save(
        path,
        {
            "args": args,
            "model_input_shape": list(dataset.input_shape),
            "model_num_classes": dataset.num_classes,
            "model_num_domains": model.num_domains,
            "model_hparams": model.hparams,
            "model_dict": model.state_dict(),
        },
        digest=True,
    )
