"""Model selection: DomainBed's semantics on records whose answers are worked out by hand."""

import math

import pytest

from dgalign.errors import ConfigError
from dgalign.selection import (
    Choice,
    IIDAccuracySelectionMethod,
    IIDAutoLRAccuracySelectionMethod,
    LeaveOneOutSelectionMethod,
    OracleSelectionMethod,
    get_methods,
    group_records,
    mean_and_stderr,
)


def rec(test_envs, hseed, step, in_acc, out_acc, trial=0, dataset="D", algorithm="A"):
    """A record of a 3-env run; in_acc/out_acc are per-env lists."""
    record = {
        "args": {
            "dataset": dataset,
            "algorithm": algorithm,
            "test_envs": list(test_envs),
            "hparams_seed": hseed,
            "trial_seed": trial,
        },
        "step": step,
    }
    for i in range(3):
        record[f"env{i}_in_acc"] = in_acc[i]
        record[f"env{i}_out_acc"] = out_acc[i]
    return record


# Test env 0. Configuration h0: training-env validation (mean of env1/env2 out) 0.65 at step 0,
# 0.80 at step 1; h1: 0.75 then 0.70. Test accuracy is env0's `in` split.
SINGLES = [
    rec([0], 0, 0, [0.50, 0, 0], [0.30, 0.60, 0.70]),
    rec([0], 0, 1, [0.52, 0, 0], [0.40, 0.80, 0.80]),
    rec([0], 1, 0, [0.90, 0, 0], [0.90, 0.70, 0.80]),
    rec([0], 1, 1, [0.95, 0, 0], [0.60, 0.70, 0.70]),
]
# Pair runs for leave-one-domain-out: validation of env j is env j's `in` accuracy in the run
# with test envs {0, j}. h0: (0.6 + 0.6) / 2 = 0.6 at step 0, (0.7 + 0.9) / 2 = 0.8 at step 1;
# h1: 0.9 at step 0, 0.5 at step 1.
PAIRS = [
    rec([0, 1], 0, 0, [0, 0.6, 0], [0, 0, 0]),
    rec([0, 2], 0, 0, [0, 0, 0.6], [0, 0, 0]),
    rec([0, 1], 0, 1, [0, 0.7, 0], [0, 0, 0]),
    rec([0, 2], 0, 1, [0, 0, 0.9], [0, 0, 0]),
    rec([0, 1], 1, 0, [0, 0.9, 0], [0, 0, 0]),
    rec([0, 2], 1, 0, [0, 0, 0.9], [0, 0, 0]),
    rec([0, 1], 1, 1, [0, 0.5, 0], [0, 0, 0]),
    rec([0, 2], 1, 1, [0, 0, 0.5], [0, 0, 0]),
]


def test_training_domain_validation_picks_best_checkpoint_then_best_config():
    # h0 at step 1 (val 0.80) beats h1 at step 0 (val 0.75): test acc 0.52
    ranked = IIDAccuracySelectionMethod.hparams_accs(SINGLES + PAIRS)
    assert [(c.val_acc, c.test_acc, c.step) for c, _ in ranked] == [
        (pytest.approx(0.80), 0.52, 1),
        (pytest.approx(0.75), 0.90, 0),
    ]
    assert IIDAccuracySelectionMethod.sweep_acc(SINGLES + PAIRS) == 0.52


def test_oracle_takes_last_checkpoint_ranked_by_test_out_split():
    # last step: h0 env0 out 0.40 (test 0.52), h1 env0 out 0.60 (test 0.95)
    assert OracleSelectionMethod.sweep_acc(SINGLES + PAIRS) == 0.95
    choice = OracleSelectionMethod.run_acc(SINGLES[:2])
    assert (choice.val_acc, choice.test_acc, choice.step) == (0.40, 0.52, 1)


def test_leave_one_out_uses_pair_runs():
    # h0 best at step 1 (0.8, test 0.52); h1 best at step 0 (0.9, test 0.90) -> 0.90
    assert LeaveOneOutSelectionMethod.sweep_acc(SINGLES + PAIRS) == 0.90
    choice = LeaveOneOutSelectionMethod.run_acc(SINGLES[:2] + PAIRS[:4])
    assert (choice.val_acc, choice.test_acc, choice.step) == (pytest.approx(0.8), 0.52, 1)


def test_leave_one_out_needs_every_pair_at_the_step():
    assert LeaveOneOutSelectionMethod.sweep_acc(SINGLES) is None
    # h1 lacks the {0, 2} run at step 0: only step 1 (0.5) is usable for h1, so h0 wins
    records = SINGLES + [
        r
        for r in PAIRS
        if not (
            r["args"]["hparams_seed"] == 1 and r["step"] == 0 and r["args"]["test_envs"] == [0, 2]
        )
    ]
    assert LeaveOneOutSelectionMethod.sweep_acc(records) == 0.52
    # a step with two single-test-env records (duplicate runs) is unusable
    assert LeaveOneOutSelectionMethod.step_acc([SINGLES[0], SINGLES[0], *PAIRS[:2]]) is None


def test_single_test_env_records_are_required():
    for method in (IIDAccuracySelectionMethod, OracleSelectionMethod):
        assert method.sweep_acc(PAIRS) is None


def test_ties_break_as_domainbed():
    # equal validation accuracy across checkpoints: the earliest checkpoint
    flat = [rec([0], 0, s, [0.1 * (s + 1), 0, 0], [0, 0.5, 0.5]) for s in range(3)]
    assert IIDAccuracySelectionMethod.run_acc(flat).step == 0
    # equal validation accuracy across configurations: the larger hparams seed
    tie = [rec([0], h, 0, [0.1 * (h + 1), 0, 0], [0, 0.5, 0.5]) for h in (0, 1, 2)]
    assert IIDAccuracySelectionMethod.sweep_acc(tie) == pytest.approx(0.3)
    # NaN validation ranks lowest
    nan = [
        rec([0], 0, 0, [0.9, 0, 0], [0, math.nan, 0.5]),
        rec([0], 1, 0, [0.2, 0, 0], [0, 0.1, 0.1]),
    ]
    assert IIDAccuracySelectionMethod.sweep_acc(nan) == 0.2


def test_group_records_puts_pair_runs_in_both_groups():
    groups = group_records(SINGLES + PAIRS)
    assert set(groups) == {(0, "D", "A", 0), (0, "D", "A", 1), (0, "D", "A", 2)}
    assert len(groups[(0, "D", "A", 0)]) == 12
    assert len(groups[(0, "D", "A", 1)]) == 4  # the {0, 1} pair records
    assert IIDAccuracySelectionMethod.sweep_acc(groups[(0, "D", "A", 1)]) is None


def test_mean_and_stderr_is_domainbed_formula():
    # values 0.5, 0.7: mean 60; population std 0.1; / sqrt(2) -> 7.07
    mean, err = mean_and_stderr([0.5, 0.7])
    assert mean == pytest.approx(60.0) and err == pytest.approx(100 * 0.1 / math.sqrt(2))
    assert mean_and_stderr([0.3]) == (pytest.approx(30.0), 0.0)
    assert mean_and_stderr([]) is None


def test_get_methods():
    assert [m.key for m in get_methods("all")] == ["training", "loo", "oracle"]
    assert get_methods("oracle") == [OracleSelectionMethod]
    with pytest.raises(ConfigError, match="unknown --selection 'best'; valid values: training"):
        get_methods("best")


def with_full_data(record, fd_in_acc):
    """`record` plus full-data retrain accuracies `fd_env{i}_in_acc` (per-env list)."""
    return {**record, **{f"fd_env{i}_in_acc": acc for i, acc in enumerate(fd_in_acc)}}


def test_autolr_selects_as_training_domain_but_reports_full_data_test_accuracy():
    # Same choice as training-domain validation (h0 at step 1, val 0.80), but the test accuracy
    # is fd_env0_in_acc of that record (0.61), not env0_in_acc (0.52) nor another env's fd key.
    fd = [[0.11, 0.9, 0.9], [0.61, 0.1, 0.1], [0.71, 0.2, 0.2], [0.81, 0.3, 0.3]]
    records = [with_full_data(r, f) for r, f in zip(SINGLES, fd, strict=True)]
    method = get_methods("autolr")[0]
    assert method is IIDAutoLRAccuracySelectionMethod
    choice = method.run_acc(records[:2])
    assert choice == Choice(pytest.approx(0.80), 0.61, 1)
    assert method.sweep_acc(records) == 0.61


def test_autolr_skips_records_without_full_data_keys():
    # h0's step-1 record lacks fd keys: h0 falls back to step 0 (val 0.65), h1's step 0 (0.75)
    # wins with its fd accuracy; a sweep with no fd keys has no result (None), not a KeyError.
    records = [
        with_full_data(SINGLES[0], [0.11, 0, 0]),
        SINGLES[1],
        with_full_data(SINGLES[2], [0.71, 0, 0]),
        with_full_data(SINGLES[3], [0.81, 0, 0]),
    ]
    assert IIDAutoLRAccuracySelectionMethod.sweep_acc(records) == 0.71
    assert IIDAutoLRAccuracySelectionMethod.sweep_acc(SINGLES) is None


def test_autolr_is_opt_in_for_all():
    assert IIDAutoLRAccuracySelectionMethod not in get_methods("all")
    assert [m.key for m in get_methods("all")] == ["training", "loo", "oracle"]
