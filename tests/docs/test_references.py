"""The repository refers only to files it contains: no notes users do not have, no dead links."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".sh", ".yml", ".yaml", ""}
# Built by concatenation so that this file does not match itself.
FORBIDDEN = ("PROTOCOLS" + ".md", "../" + "shared", "/work/" + "shared")


def repo_files() -> list[Path]:
    """The files of the checkout: git's list when there is one, else every file outside hidden,
    build and run folders."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        files = [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        skip = {"build", "dist", "runs", "sweeps", "__pycache__"}
        files = [
            p
            for p in ROOT.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") or part in skip for part in p.relative_to(ROOT).parts)
        ]
    return [f for f in files if f.is_file() and ".egg-info" not in str(f)]


def text_files() -> list[Path]:
    return [f for f in repo_files() if f.suffix in TEXT_SUFFIXES and f.stat().st_size < 2**20]


def test_no_reference_to_notes_users_do_not_have():
    hits = []
    for path in text_files():
        text = path.read_text(errors="replace")
        hits += [f"{path.relative_to(ROOT)}: {word}" for word in FORBIDDEN if word in text]
    assert not hits, hits


MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _local_target(base: Path, target: str) -> Path | None:
    if re.match(r"^[a-z]+:", target) or target.startswith("#"):
        return None  # a URL or an anchor in the same page
    return (base.parent / target.split("#")[0]).resolve()


@pytest.mark.parametrize(
    "page",
    sorted(
        str(p.relative_to(ROOT))
        for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
        if p.exists()
    ),
)
def test_markdown_links_resolve(page):
    path = ROOT / page
    missing = []
    for target in MD_LINK.findall(path.read_text()):
        resolved = _local_target(path, target)
        if resolved is not None and not resolved.exists():
            missing.append(target)
    assert not missing, f"{page} links to missing files: {missing}"


DOC_PATH = re.compile(
    r"(?<![\w/.-])((?:docs|benchmarks|examples|scripts)/[\w./-]+\.(?:md|png|py|json|csv))"
)


def test_paths_named_in_code_and_docs_exist():
    missing = []
    for path in text_files():
        for name in DOC_PATH.findall(path.read_text(errors="replace")):
            if "<" in name or "*" in name:
                continue
            if not (ROOT / name).exists():
                missing.append(f"{path.relative_to(ROOT)} -> {name}")
    assert not missing, missing


def test_the_checks_catch_a_dead_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("see [a](missing.md) and [b](https://example.org) and [c](#here)")
    targets = [_local_target(page, t) for t in MD_LINK.findall(page.read_text())]
    assert targets[1:] == [None, None] and not targets[0].exists()
    name = "docs/" + "nothing-here.md"
    assert DOC_PATH.findall(f"read {name} first, not domainbed/{name}") == [name]
