"""Turn a loss spec from a config into a callable ``loss(logits, labels, *, reduction="mean")``.

A spec is a registered name (``"gce"``) or a mapping ``{"name": "gce", "q": 0.5}``. Hyper-parameters
are checked against the loss function's signature (unknown key -> ``RegistryError`` with a
suggestion); ``class_counts`` is supplied by noisytail to the losses that take it. One combinator,
``{"name": "sum", "terms": [{"name": ..., "weight": w, ...}, ...]}``, gives weighted sums of any
losses (nested sums included).

The returned callable accepts ``class_weight=`` (a [K] tensor, e.g. ``drw_class_weights``) per call
when its loss does (``loss.accepts_class_weight``); a sum accepts it when every term does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..registry import LOSSES, RegistryError, check_kwargs, keyword_parameters, suggest
from .imbalance import as_class_counts

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss(logits [B, K], labels [B], *, reduction="mean", class_weight=None) -> Tensor``."""

COMBINATOR = "sum"
_SUPPLIED = ("logits", "labels", "reduction", "class_weight", "class_counts")


class BuiltLoss:
    """A registered loss with its hyper-parameters (and class counts) bound."""

    def __init__(
        self, name: str, fn: Callable[..., Tensor], kwargs: Mapping[str, Any], counts: Tensor | None
    ) -> None:
        params = keyword_parameters(fn)
        self.name = name
        self.fn = fn
        self.kwargs = dict(kwargs)
        self.accepts_class_weight = "class_weight" in params
        self._takes_counts = "class_counts" in params
        self._counts = counts
        self._counts_on: dict[torch.device, Tensor] = {}

    def __call__(
        self,
        logits: Tensor,
        labels: Tensor,
        *,
        reduction: str = "mean",
        class_weight: Tensor | None = None,
    ) -> Tensor:
        kwargs = dict(self.kwargs)
        if self._takes_counts:
            kwargs["class_counts"] = self._class_counts(logits.device)
        if class_weight is not None:
            if not self.accepts_class_weight:
                raise TypeError(f"loss {self.name!r} does not take class_weight.")
            kwargs["class_weight"] = class_weight
        return self.fn(logits, labels, reduction=reduction, **kwargs)

    def _class_counts(self, device: torch.device) -> Tensor:
        assert self._counts is not None
        if device not in self._counts_on:
            self._counts_on[device] = self._counts.to(device)
        return self._counts_on[device]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.name}({args})"


class SumLoss:
    """``Σ_i w_i · loss_i(logits, labels)``: the one combinator of losses."""

    def __init__(self, terms: Sequence[tuple[float, BuiltLoss | SumLoss]]) -> None:
        self.name = COMBINATOR
        self.terms = list(terms)
        self.accepts_class_weight = all(t.accepts_class_weight for _, t in self.terms)

    def __call__(
        self,
        logits: Tensor,
        labels: Tensor,
        *,
        reduction: str = "mean",
        class_weight: Tensor | None = None,
    ) -> Tensor:
        if class_weight is not None and not self.accepts_class_weight:
            names = [t.name for _, t in self.terms if not t.accepts_class_weight]
            raise TypeError(f"loss terms {names} do not take class_weight.")
        extra = {} if class_weight is None else {"class_weight": class_weight}
        total: Tensor | None = None
        for weight, term in self.terms:
            value = weight * term(logits, labels, reduction=reduction, **extra)
            total = value if total is None else total + value
        assert total is not None
        return total

    def __repr__(self) -> str:
        return " + ".join(f"{w!r}*{t!r}" for w, t in self.terms)


def build_loss(
    spec: str | Mapping[str, Any], *, class_counts: Sequence[int] | Tensor | None = None
) -> BuiltLoss | SumLoss:
    """Build a loss from ``spec`` (a name or ``{"name": ..., **hyper_parameters}``).

    ``class_counts`` ([K] training label counts) is required by the imbalance losses and passed to
    them as a float tensor (moved to the logits' device on first use).
    """
    if isinstance(spec, str):
        name, args = spec, {}
    elif isinstance(spec, Mapping):
        args = dict(spec)
        if "name" not in args:
            raise RegistryError(f"A loss spec needs a 'name', got keys {sorted(args)}.")
        name = args.pop("name")
    else:
        raise TypeError(f"A loss spec is a name or a mapping, got {type(spec).__name__}.")
    counts = None if class_counts is None else as_class_counts(class_counts).float()

    if name == COMBINATOR:
        return _build_sum(args, counts)
    if name not in LOSSES:
        names = [*LOSSES.names(), COMBINATOR]
        raise RegistryError(
            f"Unknown loss {name!r}.{suggest(str(name), names)} Valid losses: {', '.join(names)}."
        )
    fn = LOSSES.get(name)
    params = keyword_parameters(fn)
    check_kwargs(fn, args, what=f"loss {name!r}", reserved={p for p in _SUPPLIED if p in params})
    missing = [
        p.name
        for p in params.values()
        if p.default is p.empty and p.name not in _SUPPLIED and p.name not in args
    ]
    if missing:
        raise RegistryError(f"loss {name!r} needs argument(s) {missing}.")
    if "class_counts" in params and counts is None:
        raise ValueError(f"loss {name!r} needs class_counts (the training label counts).")
    return _probed(BuiltLoss(name, fn, args, counts))


def _probed(loss: BuiltLoss) -> BuiltLoss:
    """``loss`` after one call on a tiny input, so that a bad hyper-parameter (``gce`` with
    ``q: 2``) is a `RegistryError` when the loss is built, not a ``ValueError`` mid-training."""
    k = 2 if loss._counts is None else len(loss._counts)
    try:
        loss(torch.zeros(1, k), torch.zeros(1, dtype=torch.long))
    except ValueError as err:
        if type(err) is not ValueError:  # a typed toolkit error says what it is itself
            raise
        raise RegistryError(f"loss {loss.name!r}: {err}") from None
    return loss


def _build_sum(args: dict[str, Any], counts: Tensor | None) -> SumLoss:
    terms = args.pop("terms", None)
    if args:
        key = next(iter(args))
        raise RegistryError(
            f"loss {COMBINATOR!r} has no argument {key!r}.{suggest(key, ['terms'])} "
            "Its arguments: terms."
        )
    if not isinstance(terms, Sequence) or isinstance(terms, str) or not terms:
        raise RegistryError(f"loss {COMBINATOR!r} needs a non-empty list 'terms'.")
    built: list[tuple[float, BuiltLoss | SumLoss]] = []
    for term in terms:
        if not isinstance(term, str | Mapping):
            raise RegistryError(f"a loss term is a name or a mapping, got {term!r}.")
        term = {"name": term} if isinstance(term, str) else dict(term)
        weight = term.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise RegistryError(f"loss term weight must be a number, got {weight!r}.")
        built.append((float(weight), build_loss(term, class_counts=counts)))
    return SumLoss(built)
