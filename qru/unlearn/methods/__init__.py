"""The unlearning methods: one file each, registered here by one line (docs/extending.md, "A new unlearning
method"). ``METHODS`` maps the ``--method`` name to its :class:`~qru.unlearn.methods.base.Method` subclass; the
command line, the Run page, config validation, labels and the trainer all read it."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module

from qru.unlearn.methods.base import Method, Param

# The registry: "name": "module:Class". Order = the order offered on the Run page and in --help.
REGISTRY = {
    "ga": "qru.unlearn.methods.ga:GA",
    "npo": "qru.unlearn.methods.npo:NPO",
    "simnpo": "qru.unlearn.methods.simnpo:SimNPO",
    "rmu": "qru.unlearn.methods.rmu:RMU",
}


class _Methods(Mapping):
    """The registered Method classes by name, read from REGISTRY (each module imported once, when first asked for),
    so that a line added to REGISTRY is all a new method needs."""

    def __init__(self) -> None:
        self._loaded: dict[str, type[Method]] = {}

    def __getitem__(self, name: str) -> type[Method]:
        path = REGISTRY[name]
        if self._loaded.get(path) is None:
            module, _, cls = path.partition(":")
            loaded = getattr(import_module(module), cls)
            if not (isinstance(loaded, type) and issubclass(loaded, Method) and loaded.name == name):
                raise TypeError(f"REGISTRY[{name!r}] = {path!r} is not a Method subclass named {name!r}")
            self._loaded[path] = loaded
        return self._loaded[path]

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


METHODS: Mapping[str, type[Method]] = _Methods()


def method(name: str) -> type[Method]:
    """The Method class registered as ``name``. Raises KeyError naming it and the choices."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r} (choose from {', '.join(METHODS)})")
    return METHODS[name]


def all_params() -> dict[str, Param]:
    """Every parameter of every registered method by name (the first declaration of a shared name, e.g. beta, wins
    for its help text; defaults are per method)."""
    out: dict[str, Param] = {}
    for cls in METHODS.values():
        for p in cls.params:
            out.setdefault(p.name, p)
    return out


__all__ = ["METHODS", "Method", "Param", "REGISTRY", "all_params", "method"]
