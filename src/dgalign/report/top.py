"""`dgalign report DIR --top-hparams`: the configurations of one (dataset, algorithm, test env),
ranked per trial by a selection method's validation accuracy (DomainBed's list_top_hparams)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dgalign.errors import ConfigError
from dgalign.report.runs import Run, environment_names, report_records, with_swa_runs
from dgalign.selection import SelectionMethod, group_records


@dataclass
class Ranked:
    """One configuration in a trial's ranking (accuracies as fractions)."""

    hparams_seed: int
    val_acc: float
    test_acc: float
    step: int
    run_dir: str
    hparams: dict[str, Any]


def resolve_test_env(dataset: str, test_env: str, runs: list[Run]) -> int:
    """An environment index from an index or a name; ConfigError otherwise."""
    names = environment_names(dataset, runs)
    if test_env in names and not test_env.isdigit():
        return names.index(test_env)
    if test_env.isdigit() and int(test_env) < len(names):
        return int(test_env)
    listing = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    raise ConfigError(f"--test-env {test_env!r} is not an environment of {dataset} ({listing})")


def top_hparams(
    runs: list[Run],
    method: type[SelectionMethod],
    dataset: str,
    algorithm: str,
    env: int,
    include_incomplete: bool = False,
) -> dict[int, list[Ranked]]:
    """Per trial seed, the ranked configurations, best first. `algorithm` may be "X + SWA" for
    the weight average of X's runs."""
    runs = with_swa_runs(runs)
    known = sorted({(r.key[0], r.key[1]) for r in runs if r.key})
    if (dataset, algorithm) not in known:
        pairs = ", ".join(f"{d}/{a}" for d, a in known) or "none"
        raise ConfigError(f"no runs of {algorithm} on {dataset}; the sweep holds: {pairs}")
    groups = group_records(report_records(runs, include_incomplete))
    return {
        trial: rank_group(method, records)
        for (trial, d, a, e), records in sorted(groups.items())
        if (d, a, e) == (dataset, algorithm, env)
    }


def rank_group(method: type[SelectionMethod], records: list[dict[str, Any]]) -> list[Ranked]:
    """The configurations of one (trial, dataset, algorithm, test env) group of records, best
    first."""
    ranked = []
    for choice, config in method.hparams_accs(records):
        main = [r for r in config if len(r["args"]["test_envs"]) == 1] or config
        ranked.append(
            Ranked(
                int(main[0]["args"]["hparams_seed"]),
                choice.val_acc,
                choice.test_acc,
                choice.step,
                Path(str(main[0]["args"].get("output_dir", "?"))).name,
                dict(main[0].get("hparams", {})),
            )
        )
    return ranked


def render_top(
    ranking: dict[int, list[Ranked]],
    method: type[SelectionMethod],
    dataset: str,
    algorithm: str,
    env_name: str,
) -> str:
    """Markdown: one table per trial, with the hyper-parameters that differ between configs."""
    lines = [
        f"# Top hyper-parameters: {algorithm} on {dataset}, test env {env_name}",
        "",
        f"Model selection: {method.name}",
    ]
    if not ranking:
        lines += ["", "No finished run has a result for this test env under this method."]
    for trial, ranked in ranking.items():
        header, rows = ranking_table(ranked)
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines += ["", f"## Trial {trial}", ""]
        for row in [header, ["-" * w for w in widths], *rows]:
            lines.append(
                "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
            )
    return "\n".join(lines) + "\n"


def ranking_table(ranked: list[Ranked]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of ranked configurations: rank, hparams seed, accuracies in
    %, step, run directory, then the hyper-parameters that differ between them."""
    varied = varied_hparams(ranked)
    header = ["Rank", "hparams seed", "val acc", "test acc", "step", "run", *varied]
    rows = [
        [
            str(i),
            str(r.hparams_seed),
            f"{100 * r.val_acc:.1f}",
            f"{100 * r.test_acc:.1f}",
            str(r.step),
            r.run_dir,
            *(short_value(r.hparams.get(k)) for k in varied),
        ]
        for i, r in enumerate(ranked, 1)
    ]
    return header, rows


def varied_hparams(ranked: list[Ranked]) -> list[str]:
    """The hyper-parameters whose value differs between the ranked configurations."""
    return sorted(
        k
        for k in {k for r in ranked for k in r.hparams}
        if len({repr(r.hparams.get(k)) for r in ranked}) > 1
    )


def short_value(value: Any) -> str:
    """A hyper-parameter value as a table shows it (floats to 4 significant digits)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
