"""Plugins: user modules and installed packages that register algorithms, datasets,
backbones, launchers or selection methods (`dgalign.utils.registry`).

Three sources, loaded in this order, each plugin once per process:

- `--plugin MODULE_OR_PATH` on any `dgalign` command (repeatable): an importable module
  name (`my_lab.dg`) or the path of a `.py` file or package folder;
- `DGALIGN_PLUGINS`: the same, separated by `os.pathsep` (`:` on Linux and macOS);
- the entry-point group `dgalign.plugins` of installed distributions: each entry point names
  a module (imported) or a callable (imported, then called with no arguments).

A sweep passes its explicit plugins (the first two sources, paths made absolute) to every
job, whatever runs it (local processes forked or fresh, Ray tasks, Slurm jobs); installed
entry points are found by every process itself. `records()` says what was loaded (module,
file, distribution and version) for the run's `run.json`.

A plugin that fails to import, or that registers something that breaks a registry's contract,
raises `PluginError`: one line naming the plugin and the problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from dgalign.errors import ConfigError

ENV_VAR = "DGALIGN_PLUGINS"
ENTRY_POINT_GROUP = "dgalign.plugins"


class PluginError(ConfigError):
    """A plugin that cannot be loaded, or whose registrations break a contract."""


@dataclass(frozen=True)
class PluginRecord:
    """What one loaded plugin is: how it was named, its module, its file and, when it comes
    from an installed distribution, that distribution and its version."""

    plugin: str
    source: str  # "--plugin", "DGALIGN_PLUGINS" or "entry point"
    module: str
    file: str | None = None
    distribution: str | None = None
    version: str | None = None


_loaded: dict[str, PluginRecord] = {}  # by the plugin's normalized spec
_entry_points_done = False


def is_path(spec: str) -> bool:
    """Whether `spec` names a file or folder (else a module name)."""
    return spec.endswith(".py") or os.sep in spec or "/" in spec or Path(spec).exists()


def normalize(spec: str) -> str:
    """`spec` with a path made absolute (so another process, in another folder, finds it)."""
    spec = spec.strip()
    return str(Path(spec).expanduser().resolve()) if is_path(spec) else spec


def env_specs(environ: dict[str, str] | None = None) -> list[str]:
    """The plugins named by `DGALIGN_PLUGINS`."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [part.strip() for part in value.split(os.pathsep) if part.strip()]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _plugin_errors(label: str, verb: str, fix: str) -> Iterator[None]:
    """Errors of loading plugin `label` as one-line PluginErrors: a ConfigError (a
    registration that breaks a contract, or a plugin's own) with its message, any other error
    but Ctrl-C as "failed to `verb` (reason); `fix`"."""
    try:
        yield
    except ConfigError as exc:
        raise PluginError(f"plugin {label}: {exc}") from None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginError(f"plugin {label} failed to {verb} ({_reason(exc)}); {fix}") from None


def _import_path(path: Path) -> ModuleType:
    """Import the file or package folder `path` as a module named after it (reused when that
    module is already this file)."""
    if not path.exists():
        raise FileNotFoundError(f"no file or folder {path}")
    init = path / "__init__.py" if path.is_dir() else path
    if not init.is_file():
        raise ImportError(f"{path} is a folder without __init__.py")
    name = path.stem if path.is_file() else path.name
    existing = sys.modules.get(name)
    if existing is not None:
        if getattr(existing, "__file__", None) and Path(existing.__file__).resolve() == init:
            return existing
        name = "dgalign_plugin_" + hashlib.md5(str(path).encode()).hexdigest()[:12]
        if name in sys.modules:
            return sys.modules[name]
    locations = [str(path)] if path.is_dir() else None
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=locations)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _distribution_of(module: ModuleType) -> tuple[str | None, str | None]:
    top = module.__name__.split(".")[0]
    try:
        names = importlib.metadata.packages_distributions().get(top, [])
        if names:
            return names[0], importlib.metadata.version(names[0])
    except Exception:  # metadata of a broken install: the record just lacks the version
        pass
    return None, getattr(module, "__version__", None)


def _load_one(spec: str, source: str) -> PluginRecord:
    key = normalize(spec)
    if key in _loaded:
        return _loaded[key]
    fix = "check the module name or path and that it imports on its own"
    with _plugin_errors(f"{spec!r} ({source})", "import", fix):
        module = _import_path(Path(key)) if is_path(spec) else importlib.import_module(key)
    distribution, version = _distribution_of(module)
    record = PluginRecord(
        key, source, module.__name__, getattr(module, "__file__", None), distribution, version
    )
    _loaded[key] = record
    return record


def _load_entry_points() -> None:
    global _entry_points_done
    if _entry_points_done:
        return
    _entry_points_done = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry point {ep.name} = {ep.value}"
        if key in _loaded:
            continue
        dist = getattr(ep, "dist", None)
        label = f"{ep.name} = {ep.value}" + (f" from {dist.name}" if dist is not None else "")
        with _plugin_errors(f"{label} (entry point)", "load", "fix or uninstall that package"):
            target = ep.load()
            if callable(target) and not isinstance(target, ModuleType):
                target()
        module = ep.value.split(":")[0]
        file = getattr(sys.modules.get(module), "__file__", None)
        _loaded[key] = PluginRecord(
            ep.name,
            "entry point",
            module,
            file,
            dist.name if dist is not None else None,
            dist.version if dist is not None else None,
        )


def load_plugins(specs: list[str] = (), *, environ: bool = True, entry_points: bool = True):
    """Load the plugins `specs` (from `--plugin`), then those of `DGALIGN_PLUGINS` (when
    `environ`) and the installed entry points (when `entry_points`); each once per process.
    Returns the records of everything loaded so far; PluginError (one line) on failure."""
    for spec in specs:
        _load_one(spec, "--plugin")
    if environ:
        for spec in env_specs():
            _load_one(spec, ENV_VAR)
    if entry_points:
        _load_entry_points()
    return list(_loaded.values())


def explicit_specs() -> list[str]:
    """The loaded plugins named by `--plugin` or `DGALIGN_PLUGINS` (normalized): what a job
    of a sweep is given so that it loads the same ones."""
    return [r.plugin for r in _loaded.values() if r.source != "entry point"]


def records() -> list[dict[str, Any]]:
    """The loaded plugins as JSON objects, for `run.json`."""
    return [asdict(r) for r in _loaded.values()]


def parse_plugin_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split `--plugin X` / `--plugin=X` (anywhere in `argv`) from the other arguments."""
    plugins, rest = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--plugin" and i + 1 < len(argv):
            plugins.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--plugin="):
            plugins.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return plugins, rest
