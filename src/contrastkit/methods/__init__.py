"""Training methods by name: each module defines one :class:`~.base.Method` (its model, objective, labels and
option checks), and the training loop takes the pieces without asking which method it runs.

Adding a method: write ``methods/<name>.py`` with a ``METHOD = Method(...)`` and add it to :data:`METHODS` below.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from . import ce, distill, multilabel, queue, simclr, supcon
from .base import DataInfo, Method, MethodParts

__all__ = ["METHODS", "Method", "MethodParts", "DataInfo", "get_method", "list_methods", "with_method_defaults",
           "check_options"]

#: every method, by its ``--method`` name
METHODS: dict[str, Method] = {m.name: m for m in (simclr.METHOD, supcon.METHOD, ce.METHOD, distill.METHOD,
                                                  queue.SIMCLR_QUEUE, queue.SUPCON_QUEUE, multilabel.METHOD)}


def list_methods() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> Method:
    """The method called ``name``.

    Raises:
        ValueError: an unknown name; the message lists the known ones and the closest.
    """
    if name in METHODS:
        return METHODS[name]
    close = difflib.get_close_matches(str(name), METHODS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}{hint}")


def with_method_defaults(cfg: Any) -> Any:
    """A copy of the options with every option left unset (None) given its method's default (a temperature); the
    run records these values in its config.yaml and checkpoint."""
    method = get_method(cfg.method)
    unset = {name: value for name, value in method.defaults.items() if getattr(cfg, name) is None}
    return dataclasses.replace(cfg, **unset) if unset else cfg


def _check_method_options(cfg: Any, method: Method) -> None:
    """Options that belong to another method are refused when set; the method's views and batch bounds hold."""
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(cfg)}
    for other in METHODS.values():  # an option several methods own is refused by the others only
        given = [n for n in other.options if n not in method.options and getattr(cfg, n) != defaults[n]]
        if given:
            flags = " and ".join("--" + n.replace("_", "-") for n in given)
            owners = [m for m in METHODS.values() if set(given) <= set(m.options)]
            whom = (f"{other.summary.split(':')[0]} (--method {other.name})" if len(owners) == 1 else
                    "--method " + " or ".join(m.name for m in owners))
            raise ValueError(f"{flags} appl{'ies' if len(given) == 1 else 'y'} to {whom} only, "
                             f"got --method {method.name}")
    if method.views is None and cfg.n_views < method.min_views:
        kind = "contrastive methods" if method.min_views >= 2 else f"--method {method.name}"
        raise ValueError(f"--n-views must be >= {method.min_views} for {kind}, got {cfg.n_views}")
    if cfg.batch_size is not None and cfg.batch_size < method.min_batch:  # unset: checked once it is chosen
        raise ValueError(f"--batch-size must be >= {method.min_batch} for --method {method.name} (each image is "
                         f"contrasted with the others), got {cfg.batch_size}")


def check_options(cfg: Any) -> Any:
    """Every check of a run's options, before anything is created: the options themselves
    (:meth:`~contrastkit.config.PretrainConfig.validate`), then the method's. Returns the options with the
    method's defaults filled in (:func:`with_method_defaults`).

    Raises:
        ValueError: the first bad option, naming it, what it got and what it takes.
    """
    cfg.validate()
    method = get_method(cfg.method)
    cfg = with_method_defaults(cfg)
    _check_method_options(cfg, method)
    method.check(cfg)
    return cfg
