"""Name -> object registries that fail loudly.

A `Registry` is a dict plus a decorator. Registering a name twice raises; looking up an unknown
name raises with close-match suggestions and the list of valid names; `build` checks keyword
arguments against the target's signature before calling it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import math
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown or duplicate name, or bad arguments for a registered object."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class RegistryArgumentError(RegistryError, ValueError):
    """A registered object refused the value of one of the user's arguments: a bad value
    (`ValueError`) that the CLI reports as bad input (`RegistryError`)."""


def suggest(name: str, choices: list[str]) -> str:
    """Return a ' Did you mean ...?' fragment for `name`, or an empty string: the choices it
    begins (an abbreviation: 'exp' for 'exponential') or equals but for case, then the closest
    spellings."""
    low = name.lower()
    begun = [c for c in choices if low and c.lower().startswith(low)]
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    close = list(dict.fromkeys(begun + close))[:3]
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def import_modules_declaring(package: str, marker: str) -> list[str]:
    """Import every module of ``package`` (not its subpackages) that has a line starting with
    ``marker`` (e.g. ``"@METHODS.register("``), which registers what it declares; returns their
    names, sorted. Modules without such a line are not imported. A package of built-ins calls it
    so that a new built-in is one new file: no list of modules to edit."""
    found = []
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        spec = importlib.util.find_spec(f"{package}.{module.name}")
        loader = getattr(spec, "loader", None) if spec is not None else None
        text = loader.get_source(spec.name) if hasattr(loader, "get_source") else None
        if not module.ispkg and text and any(line.startswith(marker) for line in text.splitlines()):
            importlib.import_module(spec.name)
            found.append(module.name)
    return sorted(found)


class Registry(Generic[T]):
    """A named collection of classes or functions, e.g. ``METHODS`` or ``LOSSES``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("erm")``. The name defaults to ``obj.__name__``."""

        def decorator(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise RegistryError(f"{self.kind} {key!r} is already registered.")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            names = sorted(self._items)
            raise RegistryError(
                f"Unknown {self.kind} {name!r}.{suggest(name, names)} "
                f"Valid {self.kind}s: {', '.join(names)}."
            )
        return self._items[name]

    def check(self, name: str, args: Mapping[str, Any], fixed: Iterable[str] = ()) -> Any:
        """The registered object ``name`` once the user's ``args`` pass its signature
        (`check_kwargs`; ``fixed``: the names the library supplies), without calling it."""
        target = self.get(name)
        check_kwargs(target, args, what=f"{self.kind} {name!r}", reserved=set(fixed))
        return target

    def build(self, name: str, /, args: Mapping[str, Any] | None = None, **fixed: Any) -> Any:
        """Call the registered object with ``fixed`` plus user ``args``, checking names first.

        ``fixed`` are the arguments the library supplies (model, class counts, ...); ``args``
        come from the user's config and are checked against the signature so that a typo is
        an error with a suggestion rather than a silently ignored key. A plain ``ValueError``
        raised while building with user ``args`` becomes a `RegistryError` naming the object.
        """
        args = dict(args or {})
        target = self.check(name, args, fixed)
        try:
            return target(**fixed, **args)  # type: ignore[operator]
        except ValueError as err:
            # A plain ValueError while building from the user's arguments is a bad argument
            # value (l2b's norm_type: foo). Typed errors (ConfigError, DataError, ...) pass on.
            if type(err) is not ValueError or not args:
                raise
            raise RegistryArgumentError(f"{self.kind} {name!r}: {err}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def keyword_parameters(target: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The parameters of `target` (a class's ``__init__`` or a function) that take keywords."""
    sig = inspect.signature(target)
    return {
        p.name: p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    }


def _plain(value: Any) -> Any:
    """``value`` as YAML/JSON data (tuples as lists), or `_NOT_PLAIN` if it is not data."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items) else items
    return _NOT_PLAIN


_NOT_PLAIN = object()


def signature_defaults(target: Callable[..., Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The default of each keyword parameter of ``target`` that ``given`` leaves unset, where it
    is plain data (None, numbers, strings, lists of them): what a run takes from the code rather
    than from its config, and so what a change of the code's defaults changes."""
    out = {}
    for name, p in keyword_parameters(target).items():
        if name in given or p.default is p.empty:
            continue
        value = _plain(p.default)
        if value is not _NOT_PLAIN:
            out[name] = value
    return dict(sorted(out.items()))


def check_kwargs(
    target: Callable[..., Any],
    args: Mapping[str, Any],
    *,
    what: str,
    reserved: set[str] = frozenset(),
) -> None:
    """Raise `RegistryError` if `args` holds a name `target` does not accept (or a reserved one)."""
    params = keyword_parameters(target)
    allowed = sorted(set(params) - set(reserved))
    for key, value in args.items():
        if key in reserved:
            raise RegistryError(f"{what}: argument {key!r} is set by noisytail, not by the config.")
        if key not in params:
            raise RegistryError(
                f"{what} has no argument {key!r}.{suggest(key, allowed)} "
                f"Its arguments: {', '.join(allowed) or '(none)'}."
            )
        _check_value(what, key, value, params[key].annotation)


_SCALARS = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": (
        "a finite number",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    ),
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "None": ("empty", lambda v: v is None),
}


def _check_value(what: str, key: str, value: Any, annotation: Any) -> None:
    """Raise `RegistryError` if ``value`` does not fit an annotation made only of scalar types
    (``int``, ``float``, ``str``, ``bool``, ``None`` and their unions); others are not checked."""
    if annotation is inspect.Parameter.empty:
        return
    if isinstance(annotation, str):
        text = annotation
    else:
        text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
        text = text.replace("NoneType", "None")
    parts = [p.strip() for p in text.split("|")]
    if not all(p in _SCALARS for p in parts):
        return
    if not any(_SCALARS[p][1](value) for p in parts):
        wanted = " or ".join(_SCALARS[p][0] for p in parts)
        raise RegistryError(f"{what}: argument {key!r} must be {wanted}, got {value!r}.")


METHODS: Registry[Any] = Registry("method")
LOSSES: Registry[Any] = Registry("loss")
MODELS: Registry[Any] = Registry("model")
DATASETS: Registry[Any] = Registry("dataset")
DETECTORS: Registry[Any] = Registry("detector")
