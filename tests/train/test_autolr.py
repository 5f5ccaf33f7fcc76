"""The plateau schedule of auto-lr training: when it lowers the lr and when phase 1 ends."""

import pytest

from dgalign.train.autolr import PlateauSchedule, replay


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


def test_replay_gives_phase_one_lrs_in_order():
    schedule = PlateauSchedule(lr=0.5)
    for v in (1.0, 1.0, 1.0):
        schedule.observe(v)
    assert list(replay(schedule.lrs)) == schedule.lrs == [0.5, 0.5, pytest.approx(0.05)]
