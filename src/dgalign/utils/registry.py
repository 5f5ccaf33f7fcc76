"""One registry for every kind of named, pluggable thing: algorithms, datasets, backbones,
launchers and model-selection methods.

A `Registry` maps names to objects (classes or factories) in registration order. `register`
works as a decorator (`@reg.register` or `@reg.register(name=..., description=...)`) and as
a call; it checks the object against the registry's contract first, so a class that cannot
work fails at registration, in one line naming what it lacks, not later in a traceback.
`get` returns an object or raises one line listing the valid names; `describe` lists
names with their one-line descriptions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from dgalign.errors import ConfigError

T = TypeVar("T")
_MISSING = object()


class RegistryError(ConfigError):
    """A registration that breaks a registry's contract, or a name registered twice."""


def missing_attributes(obj: Any, required: tuple[str, ...]) -> list[str]:
    """The names in `required` that `obj` lacks (or has as None)."""
    return [name for name in required if getattr(obj, name, None) is None]


def _origin(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}.{qualname}" if module else qualname


class Registry(Generic[T]):
    """Named objects of one `kind` (e.g. "algorithm").

    `required`: attributes every registered object must have; `check(obj)` returns further
    problems (one short phrase each); `describe(obj)` its one-line description; `fix`: how
    to fix a contract failure, appended to the error."""

    def __init__(
        self,
        kind: str,
        *,
        required: tuple[str, ...] = (),
        check: Callable[[Any], list[str]] | None = None,
        describe: Callable[[Any], str] | None = None,
        fix: str = "",
        what: str = "name",
    ) -> None:
        self.kind = kind
        self.required = required
        self._check = check
        self._describe = describe
        self.fix = fix
        self.what = what
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    # registration -------------------------------------------------------------------------
    @overload
    def register(self, obj: T, *, name: str | None = ..., description: str | None = ...) -> T: ...

    @overload
    def register(
        self, obj: None = ..., *, name: str | None = ..., description: str | None = ...
    ) -> Callable[[T], T]: ...

    def register(self, obj=None, *, name=None, description=None):
        """Register `obj` under `name` (default: its `__name__`); as a decorator when `obj` is
        omitted. RegistryError when it breaks the contract or the name is taken by another
        object."""
        if obj is None:
            return lambda target: self.register(target, name=name, description=description)
        key = name or getattr(obj, "__name__", None)
        if not isinstance(key, str) or not key:
            raise RegistryError(f"{self.kind} {obj!r} needs a name: pass name=...")
        missing = missing_attributes(obj, self.required)
        problems = [f"lacks {', '.join(missing)}"] if missing else []
        if self._check is not None:
            problems += self._check(obj)
        if problems:
            fix = f"; {self.fix}" if self.fix else ""
            raise RegistryError(
                f"cannot register {self.kind} {key!r} ({_origin(obj)}): {'; '.join(problems)}{fix}"
            )
        previous = self._entries.get(key)
        if previous is not None and previous is not obj and _origin(previous) != _origin(obj):
            raise RegistryError(
                f"{self.kind} {key!r} is registered twice ({_origin(previous)} and "
                f"{_origin(obj)}); register one of them under another name"
            )
        self._entries[key] = obj
        if description is None and self._describe is not None:
            description = self._describe(obj)
        lines = (description or "").strip().splitlines()
        self._descriptions[key] = lines[0] if lines else ""
        return obj

    def unregister(self, name: str) -> None:
        """Remove `name` (tests and interactive use)."""
        self._entries.pop(name, None)
        self._descriptions.pop(name, None)

    # look-up ------------------------------------------------------------------------------
    def get(self, name: str, default: Any = _MISSING) -> T:
        """The object registered as `name`; ConfigError listing the valid names otherwise
        (or `default`, when given, as `dict.get`)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default is not _MISSING:
                return default
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid {self.what}s: {', '.join(self._entries)}"
                " (a plugin adds more: --plugin MODULE_OR_PATH)"
            ) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line description) of every entry, in registration order."""
        return [(key, self._descriptions.get(key, "")) for key in self._entries]

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    # the mapping protocol, so code (and tests) written for the former dicts keeps working;
    # item assignment stores as is, without the contract check (patching in tests)
    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __setitem__(self, name: str, obj: T) -> None:
        self._entries[name] = obj

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self._descriptions.pop(name, None)

    def keys(self) -> list[str]:
        return self.names()

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
