"""Model selection with DomainBed's semantics.

Records are the dicts of `results.jsonl` (one per checkpoint). `group_records` groups them by
(trial seed, dataset, algorithm, test env); a run with two test envs belongs to both groups.
In a group, a method picks a checkpoint per hyper-parameter configuration (`run_acc`), ranks
the configurations by validation accuracy (`hparams_accs`) and reports the test accuracy of
the best (`sweep_acc`). Test accuracy is always the test env's `in` split.

- training-domain validation (`IIDAccuracySelectionMethod`): the checkpoint of the run with
  that single test env maximising the mean `out` accuracy of the training envs.
- leave-one-domain-out (`LeaveOneOutSelectionMethod`): at each step, the validation accuracy is
  the mean over the other envs j of env j's `in` accuracy in the run with test envs {e, j};
  needs those pair runs at that step, else the step is unusable.
- test-domain validation, oracle (`OracleSelectionMethod`): the last checkpoint; configurations
  ranked by the test env's `out` accuracy.
- auto-lr training-domain validation (`IIDAutoLRAccuracySelectionMethod`, key `autolr`): chosen
  as training-domain validation, but the reported test accuracy is `fd_env{test}_in_acc`, the
  accuracy of the full-data retrain (DomainBed's `train_autolr`, `dgalign train --autolr`) at
  that step; records without that key are skipped, so a sweep without full-data retrains has no
  result under it. It is not part of `all`: ask for it with `--selection autolr`.

Ties break as DomainBed's do: the earliest checkpoint among equal validation accuracies, and the
configuration with the larger hparams seed among equal ones. NaN ranks lowest.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar

from dgalign.utils.registry import Registry

Record = dict[str, Any]
GroupKey = tuple[int, str, str, int]  # trial seed, dataset, algorithm, test env


@dataclass(frozen=True)
class Choice:
    """A selected checkpoint: its validation and test accuracy (fractions) and its step."""

    val_acc: float
    test_acc: float
    step: int


def _rank(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def _argmax(choices: list[Choice]) -> Choice | None:
    """The first choice with the highest validation accuracy."""
    best = None
    for choice in choices:
        if best is None or _rank(choice.val_acc) > _rank(best.val_acc):
            best = choice
    return best


def n_envs(record: Record) -> int:
    """Number of environments: how many consecutive `env{i}_out_acc` keys the record has."""
    i = 0
    while f"env{i}_out_acc" in record:
        i += 1
    return i


def test_envs(record: Record) -> list[int]:
    return list(record["args"]["test_envs"])


def _single_test_env(records: list[Record]) -> list[Record]:
    """The records of runs with one test env."""
    return [r for r in records if len(test_envs(r)) == 1]


def group_records(records: list[Record]) -> dict[GroupKey, list[Record]]:
    """Records grouped by (trial seed, dataset, algorithm, test env), in input order."""
    groups: dict[GroupKey, list[Record]] = defaultdict(list)
    for record in records:
        args = record["args"]
        for env in args["test_envs"]:
            groups[(args["trial_seed"], args["dataset"], args["algorithm"], env)].append(record)
    return dict(groups)


class SelectionMethod:
    """A model selection method; subclasses define `run_acc`."""

    name: ClassVar[str] = ""
    key: ClassVar[str] = ""
    short: ClassVar[str] = ""
    in_all: ClassVar[bool] = True  # whether `--selection all` includes the method

    @classmethod
    def run_acc(cls, records: list[Record]) -> Choice | None:
        """The selected checkpoint among the records of one configuration, or None."""
        raise NotImplementedError

    @classmethod
    def hparams_accs(cls, records: list[Record]) -> list[tuple[Choice, list[Record]]]:
        """Each configuration (hparams seed) of one group with its choice, best first."""
        by_seed: dict[Any, list[Record]] = defaultdict(list)
        for record in records:
            by_seed[record["args"]["hparams_seed"]].append(record)
        scored = []
        for seed in sorted(by_seed):
            choice = cls.run_acc(by_seed[seed])
            if choice is not None:
                scored.append((choice, by_seed[seed]))
        # a stable ascending sort reversed: among ties the later (larger) seed comes first
        return sorted(scored, key=lambda item: _rank(item[0].val_acc))[::-1]

    @classmethod
    def sweep_acc(cls, records: list[Record]) -> float | None:
        """Test accuracy of the best configuration of one group, or None if none qualifies."""
        ranked = cls.hparams_accs(records)
        return ranked[0][0].test_acc if ranked else None


class IIDAccuracySelectionMethod(SelectionMethod):
    """Training-domain validation: best mean `out` accuracy of the training envs."""

    name = "training-domain validation set"
    key = "training"
    short = "training-domain validation"

    @classmethod
    def step_acc(cls, record: Record) -> Choice:
        test_env = test_envs(record)[0]
        val = [record[f"env{i}_out_acc"] for i in range(n_envs(record)) if i != test_env]
        return Choice(
            sum(val) / len(val) if val else math.nan,
            record[f"env{test_env}_in_acc"],
            record["step"],
        )

    @classmethod
    def run_acc(cls, records: list[Record]) -> Choice | None:
        single = _single_test_env(records)
        return _argmax([cls.step_acc(r) for r in single])


class LeaveOneOutSelectionMethod(SelectionMethod):
    """Leave-one-domain-out cross-validation (needs the runs with two test envs)."""

    name = "leave-one-domain-out cross-validation"
    key = "loo"
    short = "leave-one-domain-out"

    @classmethod
    def step_acc(cls, records: list[Record]) -> Choice | None:
        """The choice at one step, from the records of that step; None if unusable."""
        single = _single_test_env(records)
        if len(single) != 1:
            return None
        test_env = test_envs(single[0])[0]
        count = n_envs(records[0])
        val_accs = [-1.0] * count
        for record in records:
            envs = test_envs(record)
            if len(envs) != 2:
                continue
            val_env = (set(envs) - {test_env}).pop()
            val_accs[val_env] = record[f"env{val_env}_in_acc"]
        others = val_accs[:test_env] + val_accs[test_env + 1 :]
        if any(v == -1 for v in others):
            return None
        return Choice(
            sum(others) / (count - 1), single[0][f"env{test_env}_in_acc"], single[0]["step"]
        )

    @classmethod
    def run_acc(cls, records: list[Record]) -> Choice | None:
        by_step: dict[int, list[Record]] = defaultdict(list)
        for record in records:
            by_step[record["step"]].append(record)
        choices = [cls.step_acc(by_step[step]) for step in sorted(by_step)]
        return _argmax([c for c in choices if c is not None])


class OracleSelectionMethod(SelectionMethod):
    """Test-domain validation (oracle): the last checkpoint, ranked by the test env's `out`
    accuracy (no early stopping)."""

    name = "test-domain validation set (oracle)"
    key = "oracle"
    short = "test-domain validation (oracle)"

    @classmethod
    def run_acc(cls, records: list[Record]) -> Choice | None:
        single = _single_test_env(records)
        if not single:
            return None
        test_env = test_envs(single[0])[0]
        last = sorted(single, key=lambda r: r["step"])[-1]
        return Choice(last[f"env{test_env}_out_acc"], last[f"env{test_env}_in_acc"], last["step"])


class IIDAutoLRAccuracySelectionMethod(SelectionMethod):
    """Auto-lr training-domain validation: the checkpoint maximising the mean `out` accuracy of
    the training envs among the records that carry the full-data retrain's accuracies; the test
    accuracy is the retrain's `fd_env{test}_in_acc` at that step."""

    name = "auto lr training-domain validation set"
    key = "autolr"
    short = "auto-lr training-domain validation"
    in_all: ClassVar[bool] = False  # opt-in: `all` keeps the three methods of existing reports

    @classmethod
    def step_acc(cls, record: Record) -> Choice | None:
        """The training-domain choice of `record` with the full-data test accuracy, or None
        when the record has no `fd_env{test}_in_acc`."""
        test_env = test_envs(record)[0]
        test_acc = record.get(f"fd_env{test_env}_in_acc")
        if test_acc is None:
            return None
        chosen = IIDAccuracySelectionMethod.step_acc(record)
        return Choice(chosen.val_acc, test_acc, chosen.step)

    @classmethod
    def run_acc(cls, records: list[Record]) -> Choice | None:
        choices = [cls.step_acc(r) for r in _single_test_env(records)]
        return _argmax([c for c in choices if c is not None])


METHODS: tuple[type[SelectionMethod], ...] = (
    IIDAccuracySelectionMethod,
    LeaveOneOutSelectionMethod,
    OracleSelectionMethod,
)  # the built-in methods; SELECTION_METHODS holds these and any a plugin registers

SELECTION_METHODS: Registry[type[SelectionMethod]] = Registry(
    "--selection",
    required=("key", "name", "short"),
    check=lambda cls: (
        []
        if isinstance(cls, type) and issubclass(cls, SelectionMethod)
        else ["is not a dgalign.selection.SelectionMethod subclass"]
    ),
    describe=lambda cls: getattr(cls, "name", ""),
    fix="subclass dgalign.selection.SelectionMethod and set key, name, short and run_acc",
    what="value",
)
for _method in (*METHODS, IIDAutoLRAccuracySelectionMethod):
    SELECTION_METHODS.register(_method, name=_method.key)


def register_selection(cls=None):
    """Class decorator: make selection method `cls` available as `--selection cls.key`."""
    if cls is None:
        return register_selection
    return SELECTION_METHODS.register(cls, name=getattr(cls, "key", None))


def get_methods(key: str) -> list[type[SelectionMethod]]:
    """`training`, `loo`, `oracle`, `autolr` (or a registered key) or `all` -> the methods;
    `all` leaves out the opt-in ones (`in_all` False, e.g. `autolr`); ConfigError otherwise."""
    if key == "all":
        return [cls for _, cls in SELECTION_METHODS.items() if getattr(cls, "in_all", True)]
    if key not in SELECTION_METHODS:
        from dgalign.errors import ConfigError

        valid = ", ".join([*SELECTION_METHODS.names(), "all"])
        raise ConfigError(f"unknown --selection {key!r}; valid values: {valid}")
    return [SELECTION_METHODS.get(key)]


def mean_and_stderr(values: list[float]) -> tuple[float, float] | None:
    """DomainBed's summary over trials, in percent: mean and the population standard deviation
    divided by sqrt(n) (np.std(x / sqrt(n))); None for no values."""
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n
    return 100 * mean, 100 * math.sqrt(var) / math.sqrt(n)
