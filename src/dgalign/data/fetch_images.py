"""`dgalign data fetch` / `data check` for the image benchmarks of the manifest.

Fetch: download each file of the manifest entry into `data_dir/downloads` (resumable `.part`
files, retries, progress bar, checksum where known, a zip/tar check always), extract it safely
into a staging folder, build DomainBed's layout there (rename, TerraIncognita's location and
category sorting, DomainNet's duplicate removal) and move it into place in one rename. A
dataset folder that already exists is left alone (`data check` verifies it).

Check: count the images per environment and class as the dataset loader lists them and compare
with the manifest's environments, classes and image counts.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dgalign.data.archives import archive_kind, safe_extract
from dgalign.data.images import class_folders, scan_images
from dgalign.data.manifest import (
    DOMAINNET_DUPLICATES,
    TERRA_ANNOTATIONS,
    TERRA_CATEGORIES,
    TERRA_IMAGES,
    TERRA_LOCATIONS,
    ImageDatasetSpec,
    Remote,
)
from dgalign.data.sources.download import DownloadFailed, DownloadOptions, download_once
from dgalign.errors import DataError
from dgalign.utils.hashing import md5_of, sha256_of

Log = Callable[[str], None]


def _verify(path: Path, remote: Remote, archive: bool, verify: bool = True) -> str | None:
    """Why `path` is not the expected file, or None when it passes every known check (with
    `verify` false only the archive check: sizes and digests are skipped)."""
    size = path.stat().st_size
    if verify and remote.size is not None and size != remote.size:
        return f"size {size} bytes, expected {remote.size} (--no-verify skips this check)"
    if verify and remote.sha256 is not None and (digest := sha256_of(path)) != remote.sha256:
        return f"sha256 {digest}, expected {remote.sha256} (--no-verify skips this check)"
    if verify and remote.md5 is not None and (digest := md5_of(path)) != remote.md5:
        return f"md5 {digest}, expected {remote.md5} (--no-verify skips this check)"
    if archive and archive_kind(path) is None:
        return "not a zip or tar archive (a web page from the host, such as a quota notice?)"
    return None


def download(
    remote: Remote,
    folder: Path,
    options: DownloadOptions,
    log: Log,
    manual: str,
    archive: bool = True,
    verify: bool = True,
) -> Path:
    """`folder/remote.filename`, downloaded (resuming a `.part`) unless a good copy is there."""
    final = folder / remote.filename
    fix = f"download {remote.url} by hand to {final} and rerun, or {manual}"
    if final.is_file():
        problem = _verify(final, remote, archive, verify)
        if problem is None:
            log(f"{final} already downloaded")
            return final
        raise DataError(f"{final} is not the expected file ({problem}); delete it, or {fix}")
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{remote.filename}.part"
    log(f"downloading {remote.url}" + (" (resuming)" if part.is_file() else ""))
    for attempt in range(options.retries + 1):
        try:
            download_once(remote.url, part, options, remote.filename)
            break
        except DownloadFailed as err:
            if not err.retry or attempt == options.retries:
                raise DataError(f"could not download {remote.url} ({err}); {fix}") from None
            log(f"{remote.url}: {err}; retrying")
            time.sleep(options.backoff_s * 2**attempt)
    problem = _verify(part, remote, archive, verify)
    if problem is not None:
        part.unlink()
        raise DataError(f"{remote.url} gave a bad file ({problem}); deleted it. Rerun, or {fix}")
    part.replace(final)
    return final


def _manual(spec: ImageDatasetSpec, target: Path) -> str:
    return (
        f"place the extracted images at {target} as <environment>/<class>/<image> "
        f"(environments: {', '.join(spec.env_dirs)}; see {spec.homepage or 'the dataset page'})"
    )


def fetch_image_dataset(
    spec: ImageDatasetSpec,
    data_dir: Path,
    options: DownloadOptions | None = None,
    keep_archives: bool = False,
    log: Log = print,
    duplicates: Remote = DOMAINNET_DUPLICATES,
    verify: bool = True,
) -> Path:
    """Download, extract and lay out `spec` under `data_dir`; return the dataset folder
    (`verify` false: do not compare sizes and digests with the manifest's)."""
    options = options or DownloadOptions()
    target = Path(data_dir) / spec.directory
    if target.exists():
        log(f"{spec.name}: {target} already exists; `dgalign data check {spec.name}` verifies it")
        return target
    manual = _manual(spec, target)
    if spec.layout == "manual":
        raise DataError(f"{spec.name} has no download source here; {manual}")
    downloads = Path(data_dir) / "downloads"
    files = []
    if spec.layout == "domainnet":  # small, and needed last: fail early if it is unreachable
        files.append(
            download(duplicates, downloads, options, log, manual, archive=False, verify=verify)
        )
    files += [download(r, downloads, options, log, manual, verify=verify) for r in spec.downloads]
    staging = Path(data_dir) / f".{spec.directory}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        built = _build(spec, files, staging, manual, options, log)
        if built.is_symlink() or not built.is_dir():
            raise DataError(f"{spec.name}: the archive has no folder {spec.extracted!r}; {manual}")
        built.replace(target)
    finally:  # a rejected archive leaves nothing of its own behind
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archives:
        for path in files:
            path.unlink(missing_ok=True)
    log(f"{spec.name} ready in {target}")
    return target


def _build(
    spec: ImageDatasetSpec,
    files: list[Path],
    staging: Path,
    manual: str,
    options: DownloadOptions,
    log: Log,
) -> Path:
    """Extract the archives into `staging` and lay out the dataset there; the built folder."""
    archives = files[1:] if spec.layout == "domainnet" else files
    for path in archives:
        log(f"extracting {path.name}")
        safe_extract(path, staging / "raw", progress=options.progress)
    if spec.layout == "rename":
        return staging / "raw" / spec.extracted
    if spec.layout == "terra":
        built = staging / "built"
        sort_terra_incognita(staging / "raw", built, log)
        return built
    if spec.layout == "domainnet":
        built = staging / "raw"
        removed = remove_listed(built, files[0])
        log(f"{spec.name}: removed {removed} duplicate images listed in {files[0].name}")
        return built
    raise DataError(f"unknown layout {spec.layout!r} in the manifest entry of {spec.name}")


def sort_terra_incognita(raw: Path, out: Path, log: Log = print) -> dict[str, int]:
    """DomainBed's TerraIncognita: copy each annotated image of the kept locations and categories
    from `raw/<TERRA_IMAGES>/` to `out/location_<loc>/<category>/` (once per annotation, as
    DomainBed), reading the COCO-style `raw/<TERRA_ANNOTATIONS>`. Returns images per location."""
    annotations = raw / TERRA_ANNOTATIONS
    if not annotations.is_file():
        raise DataError(f"TerraIncognita: {annotations} missing from the annotation archive")
    data = json.loads(annotations.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[object, list[str]] = defaultdict(list)
    for note in data["annotations"]:
        by_image[note["image_id"]].append(names[note["category_id"]])
    counts: dict[str, int] = defaultdict(int)
    for image in data["images"]:
        location = str(image["location"])
        if location not in TERRA_LOCATIONS:
            continue
        for category in by_image.get(image["id"], []):
            if category not in TERRA_CATEGORIES:
                continue
            name = image["file_name"]
            folder = out / f"location_{location}" / category
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(raw / TERRA_IMAGES / name, folder / Path(name).name)
            counts[location] += 1
    log("TerraIncognita: " + ", ".join(f"location {k}: {v}" for k, v in sorted(counts.items())))
    return dict(counts)


def remove_listed(root: Path, listing: Path) -> int:
    """Delete the files named (relative to `root`, one a line) in `listing`; return how many
    existed. Lines that are absolute or contain `..` are ignored."""
    removed = 0
    for line in listing.read_text().splitlines():
        rel = line.strip()
        if not rel or rel.startswith("/") or ".." in Path(rel).parts:
            continue
        path = root / rel
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


@dataclass
class CheckReport:
    """Per-environment image counts of a placed dataset against the manifest."""

    name: str
    folder: Path
    rows: list[tuple[str, str, int, int | None]] = field(default_factory=list)
    total_expected: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(row[2] for row in self.rows)

    @property
    def ok(self) -> bool:
        """No problem, and the manifest's total (0: unknown, not compared) is matched."""
        return not self.problems and self.total_expected in (0, self.total)

    def render(self) -> str:
        """A plain-text table: environment, folder, images found, expected, difference."""
        lines = [
            f"{self.name} in {self.folder}",
            f"{'env':8} {'folder':14} {'found':>8} {'expected':>9} {'diff':>7}",
        ]
        for env, folder, found, expected in self.rows:
            exp = "?" if expected is None else str(expected)
            diff = "" if expected is None else f"{found - expected:+d}"
            lines.append(f"{env:8} {folder:14} {found:8d} {exp:>9} {diff:>7}")
        diff = self.total - self.total_expected
        lines.append(f"{'total':8} {'':14} {self.total:8d} {self.total_expected:9d} {diff:+7d}")
        lines += [f"problem: {p}" for p in self.problems]
        lines.append("OK" if self.ok else "MISMATCH")
        return "\n".join(lines)


def check_image_dataset(spec: ImageDatasetSpec, data_dir: Path) -> CheckReport:
    """Compare the images under `data_dir/<spec.directory>` with the manifest entry."""
    folder = Path(data_dir) / spec.directory
    report = CheckReport(spec.name, folder, total_expected=spec.total)
    if not folder.is_dir():
        report.problems.append(f"no folder {folder} (run `dgalign data fetch {spec.name}`)")
        return report
    expected_classes = set(spec.classes)
    index = {name: i for i, name in enumerate(sorted(expected_classes))}
    extra_envs = sorted(set(class_folders(folder)) - set(spec.env_dirs))
    if extra_envs:
        report.problems.append(f"folders that are no environment: {extra_envs}")
    for i, (env, env_dir) in enumerate(zip(spec.environments, spec.env_dirs, strict=True)):
        expected = spec.env_counts[i] if spec.env_counts else None
        path = folder / env_dir
        if not path.is_dir():
            report.rows.append((env, env_dir, 0, expected))
            report.problems.append(f"environment folder {env_dir!r} missing")
            continue
        found = set(class_folders(path))
        if missing := sorted(expected_classes - found):
            report.problems.append(f"{env_dir}: {len(missing)} classes missing: {missing[:5]}")
        if unknown := sorted(found - expected_classes):
            report.problems.append(f"{env_dir}: unexpected class folders {unknown[:5]}")
        count = len(scan_images(path, index))
        report.rows.append((env, env_dir, count, expected))
        if expected is not None and count != expected:
            report.problems.append(f"{env_dir}: {count} images, expected {expected}")
    return report


def fetch_wilds(name: str, data_dir: Path, log: Log = print) -> Path:
    """Download WILDS dataset `name` ("WILDSCamelyon", "WILDSFMoW") with the wilds package."""
    from dgalign.data.wilds_datasets import WILDS_DATASETS, load_wilds

    cls = WILDS_DATASETS[name]
    log(f"{name}: downloading WILDS {cls.WILDS_NAME} into {data_dir} with the wilds package")
    load_wilds(cls.WILDS_NAME, Path(data_dir), download=True)
    return Path(data_dir)
