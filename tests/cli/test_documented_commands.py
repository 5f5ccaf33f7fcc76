"""Every command the README and the docs show exists and parses: the README's command table
(subcommands, flags and their documented choices) and every `dgalign ...` line of a shell
code block (parsed in full by the real parser)."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from dgalign.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return dict(parser._option_string_actions)


def table_rows() -> list[str]:
    """The `dgalign ...` templates of the README's command table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    return [m.replace("\\|", "|") for m in re.findall(r"^\| `(dgalign [^`]+)`", section, re.M)]


def check_template(template: str) -> list[str]:
    """Problems of one table row: unknown subcommands, unknown flags, and documented values
    outside a flag's `choices` (flags validated later, without `choices`, are not checked)."""
    tokens = template.split()[1:]
    parsers = [("dgalign", build_parser())]
    problems = []
    while tokens and parsers and _subparsers(parsers[0][1]):
        names = tokens.pop(0).split("|")
        expanded = []
        for name, parser in parsers:
            choices = _subparsers(parser)
            for alt in names:
                if alt in choices:
                    expanded.append((f"{name} {alt}", choices[alt]))
                else:
                    problems.append(f"{name} has no subcommand {alt!r}")
        parsers = expanded
    flags = [t.strip("[]") for t in tokens]
    for name, parser in parsers:
        options = _options(parser)
        for i, token in enumerate(flags):
            if not token.startswith("--"):
                continue
            if token not in options:
                problems.append(f"{name} has no option {token}")
                continue
            action = options[token]
            if i + 1 < len(flags) and "|" in flags[i + 1] and action.choices is not None:
                missing = [c for c in flags[i + 1].split("|") if c not in action.choices]
                problems += [f"{name} {token} does not accept {c!r}" for c in missing]
    return problems


@pytest.mark.parametrize("template", table_rows())
def test_command_table_row_exists(template):
    assert not check_template(template)


def test_the_table_is_found_and_the_check_can_fail():
    rows = table_rows()
    assert len(rows) >= 8 and any(r.startswith("dgalign analyze") for r in rows)
    assert check_template("dgalign analyze nothing RUN_DIR")
    assert check_template("dgalign analyze flatness RUN [--directions unit|spiral]")
    assert check_template("dgalign train --no-such-flag X")
    assert not check_template("dgalign analyze flatness RUN [--directions unit|filter]")


def shell_commands(page: Path) -> list[str]:
    """`dgalign ...` command lines in the page's shell code blocks (continuations joined,
    prompts, comments, `&&` chains and leading variable assignments removed; shell variables,
    as in `for t in 0 1 2; do ...`, become 0)."""
    commands = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", page.read_text(), re.M | re.S):
        if lang not in ("bash", "sh", "console", "shell"):
            continue
        lines = body.replace("\\\n", " ").splitlines()
        if lang == "console":
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        for line in lines:
            line = re.sub(r"\$\{?\w+\}?", "0", line)
            for part in re.split(r"&&|;", line):
                words = shlex.split(part, comments=True)
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words.pop(0)
                if words[:1] == ["dgalign"]:
                    commands.append(shlex.join(words))
    return commands


DOCUMENTED = [(p.relative_to(ROOT).as_posix(), c) for p in PAGES for c in shell_commands(p)]


@pytest.mark.parametrize(("page", "command"), DOCUMENTED)
def test_documented_command_parses(page, command):
    parser = build_parser()
    try:
        args = parser.parse_args(shlex.split(command)[1:])
    except SystemExit as exc:
        pytest.fail(f"{page}: `{command}` does not parse (exit {exc.code})")
    assert callable(args.handler)


def test_every_page_with_commands_is_seen():
    pages = {page for page, _ in DOCUMENTED}
    assert "README.md" in pages and "docs/reproduction.md" in pages
    assert any("analyze transferability" in c for _, c in DOCUMENTED)
