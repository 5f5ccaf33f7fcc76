"""The plateau schedule of auto-lr training (when it lowers the lr, when phase 1 ends), the
lr rescaling of an algorithm's optimizers, and the combinations `--autolr` refuses."""

import pytest
import torch

from dgalign.algorithms.erm import ERM
from dgalign.algorithms.spaces import default_hparams
from dgalign.errors import ConfigError, RunDirError
from dgalign.runs.directory import RunDirectory
from dgalign.train import RunConfig
from dgalign.train.autolr import AutoLR, LRScale, PlateauSchedule, check_config


def test_lr_drops_after_two_checks_without_improvement_and_stops_at_the_third_drop():
    schedule = PlateauSchedule(lr=1.0)
    # improving, then flat: the second non-improving check (patience 1) lowers the lr
    assert [schedule.observe(v) for v in (1.0, 0.5, 0.5, 0.5)] == [1.0, 1.0, 1.0, 0.1]
    assert not schedule.finished
    for v in (0.5, 0.5, 0.5, 0.5):  # two more plateaus -> two more drops
        schedule.observe(v)
    assert schedule.lrs[-1] == pytest.approx(1e-3)
    assert schedule.decreases == 3 and schedule.finished


def test_tiny_improvement_below_the_relative_threshold_is_a_plateau():
    schedule = PlateauSchedule(lr=1.0)
    for v in (1.0, 0.99995, 0.9999):
        schedule.observe(v)
    assert schedule.lrs == [1.0, 1.0, 0.1]


def test_lr_scale_rescales_each_optimizer_from_its_own_lr_and_catches_a_recreated_one():
    """Each group keeps its own base lr x factor; an optimizer made later starts at factor 1.
    Mutations caught: setting every group to one lr, multiplying twice on a repeat."""
    net = torch.nn.Linear(2, 1)
    holder = torch.nn.Module()
    holder.optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    holder.other = torch.optim.SGD(net.parameters(), lr=0.5)
    scale = LRScale()
    scale.apply(holder, 0.1)
    scale.apply(holder, 0.1)
    assert holder.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert holder.other.param_groups[0]["lr"] == pytest.approx(0.05)
    holder.optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)  # re-created by an update
    scale.apply(holder, 0.01)
    assert holder.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert holder.other.param_groups[0]["lr"] == pytest.approx(0.005)


def _config(**kw):
    return RunConfig(dataset="Spurious28", algorithm="ERM", output_dir="x", autolr=True, **kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"swa": True}, "--autolr cannot be combined with --swa:"),
        ({"swad": True}, "--autolr cannot be combined with --swad:"),
        ({"task": "domain_adaptation"}, "--task domain_generalization only"),
    ],
)
def test_unsupported_combinations_are_one_line_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        check_config(_config(**kw), ERM, {"lr": 1e-3})


def test_an_algorithm_without_optimizer_or_lr_is_refused():
    with pytest.raises(ConfigError, match="has none; choose an algorithm"):
        AutoLR(torch.nn.Linear(2, 1), {"lr": 1e-3}, torch.device("cpu"))
    with pytest.raises(ConfigError, match="hparams give None"):
        check_config(_config(), ERM, {})


def _retraining(end_step=4):
    hparams = default_hparams("ERM", "Spurious28") | {"backbone": "mlp", "mlp_width": 4}
    algorithm = ERM((3, 28, 28), 2, 2, hparams)
    autolr = AutoLR(algorithm, hparams, torch.device("cpu"))
    autolr.start_phase2(end_step)
    return autolr


def test_a_retrain_resume_keeps_phase_one_records_and_drops_later_retrain_keys(tmp_path):
    """Records of steps 0, 2, 4 (phase 1 ended at 4), retrain checkpoint at step 3: step 4's
    stale retrain keys go, earlier ones stay. Mutations caught: keeping only the records before
    the retrain step (the loop's rule), keeping stale `fd_` keys."""
    rundir = RunDirectory(tmp_path)
    fd = {"fd_env0_in_acc": 0.5, "fd_autolr_lr": 1e-3}
    records = [{"step": s, "env0_in_acc": 0.1, **fd} for s in (0, 2, 4)]
    kept = _retraining().resumed_records(rundir, 3, records, 10, 2)
    assert [r["step"] for r in kept] == [0, 2, 4]
    assert "fd_env0_in_acc" in kept[1] and set(kept[2]) == {"step", "env0_in_acc"}


def test_a_retrain_resume_without_the_earlier_retrain_keys_or_off_a_checkpoint_is_refused(
    tmp_path,
):
    rundir = RunDirectory(tmp_path)
    records = [{"step": s, "env0_in_acc": 0.1} for s in (0, 2, 4)]
    with pytest.raises(RunDirError, match="lacks the full-data accuracies of step 0"):
        _retraining().resumed_records(rundir, 3, records, 10, 2)
    with pytest.raises(RunDirError, match=r"retrain step 2 follows no checkpoint of 0\.\.4"):
        _retraining().resumed_records(rundir, 2, records, 10, 2)
