"""Fuzz: 200 random invalid `--hparams` values across every registered algorithm, through
`dgalign train`: each is a one-line error naming the hyper-parameter, never a traceback, and
nothing is written. Seeded, so a failure reproduces."""

import json
import math
import random
import time

from dgalign import algorithms
from dgalign.algorithms.spaces import hparam_space
from dgalign.cli import main
from dgalign.hparams import Domain

N_CASES = 200
BUDGET_S = 30.0
WRONG_TYPES = [None, [], [1.0], {}, {"x": 1}, "0.1", "true", ""]


def invalid_values(domain: Domain) -> list:
    """Values outside `domain`: wrong types, non-finite numbers, out of range, not integral."""
    if domain.kind == "bool":
        return [0, 1, 0.5, "yes", *WRONG_TYPES]
    if domain.kind == "str":
        values = [0, 1.5, True, None, [], {}]
        return values + (
            ["no-such-option", domain.options[0].upper() + "!"] if domain.options else []
        )
    values = [math.nan, math.inf, -math.inf, True, False, *WRONG_TYPES]
    if domain.lo is not None:
        values += [domain.lo - 1, domain.lo - 1e-3, -1e9]
        if domain.lo_open:
            values.append(domain.lo)
    if domain.hi is not None:
        values += [domain.hi + 1, 1e12 if domain.hi < 1e12 else domain.hi * 10]
        if domain.hi_open:
            values.append(domain.hi)
    if domain.kind == "int":
        start = domain.lo if domain.lo is not None else 0
        values += [start + 0.5, 2.5e0 + start]
    return values


def test_two_hundred_invalid_hparams_are_one_line_errors(tmp_path, capsys):
    rng = random.Random(20)
    names = algorithms.names()
    cases = []
    while len(cases) < N_CASES:
        algorithm = rng.choice(names)
        entry = rng.choice(hparam_space(algorithm, "Spurious28"))
        value = rng.choice(invalid_values(entry.allowed))
        cases.append((algorithm, entry.name, value))
    assert len({c[0] for c in cases}) >= min(len(names), 20)  # spread over the registry
    start = time.perf_counter()
    for i, (algorithm, name, value) in enumerate(cases):
        out = tmp_path / f"run{i}"
        argv = ["train", "--dataset", "Spurious28", "--algorithm", algorithm, "--test-envs", "2"]
        argv += ["--output-dir", str(out), "--steps", "1", "--no-progress"]
        argv += ["--hparams", json.dumps({name: value})]  # NaN / Infinity tokens included
        code = main(argv)
        captured = capsys.readouterr()
        err = captured.err.strip()
        case = f"{algorithm} {name}={value!r}: {err!r}"
        assert code == 2, case
        assert err.startswith("dgalign: error: hyper-parameter ") and "\n" not in err, case
        assert f"hyper-parameter {name} must be" in err, case
        assert "Traceback" not in err and captured.out == "", case
        assert not out.exists(), case
    elapsed = time.perf_counter() - start
    assert elapsed < BUDGET_S, f"{N_CASES} cases took {elapsed:.1f} s"
