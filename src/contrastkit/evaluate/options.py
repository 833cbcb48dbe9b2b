"""Which ``eval`` options apply to which protocol, checked without importing torch.

``contrastkit eval`` refuses an option its protocol does not use (``--protocol knn --from-scratch``) instead of
ignoring it; the command line runs this check before anything heavy is imported, and
:func:`contrastkit.evaluate.protocols.evaluate_checkpoint` runs it again for Python callers.
"""
from __future__ import annotations

from typing import Any

__all__ = ["PROTOCOLS", "EXTRA_PROTOCOLS", "ALL_PROTOCOLS", "OPTION_PROTOCOLS", "check_eval_options"]

#: the protocols of ``--protocol all``
PROTOCOLS = ("knn", "linear", "finetune", "retrieval")
#: protocols outside ``all``: ``classifier`` scores a fine-tuned checkpoint's own classifier.
EXTRA_PROTOCOLS = ("classifier",)
#: every value of ``--protocol``
ALL_PROTOCOLS = PROTOCOLS + ("all",) + EXTRA_PROTOCOLS

#: option (a keyword of ``evaluate_checkpoint``) -> the protocols that use it; ``all`` uses every option.
OPTION_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "linear_epochs": ("linear",),
    "finetune_epochs": ("finetune",),
    "label_fraction": ("finetune",),
    "from_scratch": ("finetune",),
    "projection": ("knn", "linear", "retrieval"),  # fine-tuning trains the encoder f, never reads z
    "from_head_layer": ("finetune",),  # SimCLRv2: fine-tune from a layer of the projection head
    "save": ("finetune",),  # write the fine-tuned network as a checkpoint
    "labels": ("retrieval",),  # a CSV of label sets: retrieval on a folder of multi-labelled images
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_eval_options(protocol: str, **options: Any) -> None:
    """Checks the protocol name, that each option given applies to it, and the options' values.

    Args:
        protocol: ``knn``, ``linear``, ``finetune``, ``retrieval``, ``classifier`` or ``all``.
        **options: keywords of :data:`OPTION_PROTOCOLS`; None or False means "not given".

    Raises:
        ValueError: an unknown protocol or option, an option the protocol does not use, or a value out of range.
    """
    if protocol != "all" and protocol not in PROTOCOLS + EXTRA_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS + EXTRA_PROTOCOLS)} "
                         f"or all")
    unknown = sorted(set(options) - set(OPTION_PROTOCOLS))
    if unknown:
        raise ValueError(f"unknown eval options {unknown}; known: {sorted(OPTION_PROTOCOLS)}")
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    for name, value in given.items():
        applies = OPTION_PROTOCOLS[name]
        if protocol != "all" and protocol not in applies:
            raise ValueError(f"{_flag(name)} applies to --protocol {' or '.join(applies)} (or all), "
                             f"not {protocol}; leave it out")
        if name == "from_head_layer" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"--from-head-layer must be an integer >= 0 (0: h), got {value!r}")
        if name.endswith("_epochs") and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{_flag(name)} must be an integer >= 1 (or left out for the protocol's), got {value!r}")
    if protocol == "all" and "labels" in given:
        raise ValueError("--labels scores retrieval against label sets (the other protocols need classes): it "
                         "applies to --protocol retrieval, not all")
    if protocol == "all" and "save" in given:
        raise ValueError("--save writes the network of one fine-tuning run: it applies to --protocol finetune, "
                         "not all")
    fraction = given.get("label_fraction")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"--label-fraction must be in (0, 1], got {fraction}")
