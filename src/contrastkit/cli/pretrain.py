"""The ``pretrain`` and ``distill`` subcommands: flags generated from :class:`~contrastkit.config.PretrainConfig`.

    contrastkit pretrain --method simclr --data digits --epochs 10 --out runs/x
    contrastkit distill --teacher runs/x/finetuned.pt --data DATA --out runs/d
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from ..config import RUN_IDENTITY, SPELLINGS, PretrainConfig, config_groups, load_yaml, option_flag
from ..recipes import RECIPES, get_recipe
from .common import print_json

__all__ = ["register", "config_from_args", "add_config_options", "NOT_FOR_DISTILL"]

#: Pretrain options that do not apply to distillation (``contrastkit.methods.distill.IGNORED``, held here too so
#: that ``--help`` imports no torch; a test keeps the two equal) and ``method`` itself.
NOT_FOR_DISTILL = ("method", "loss", "supcon_variant", "temperature", "margin", "l2_normalize", "semi_hard",
                   "labeled_fraction", "head", "proj_dim", "proj_hidden_dim", "head_layers", "momentum_encoder",
                   "momentum_ramp", "queue_size", "labels")


def _key_value(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip().replace("-", "_"), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"the value of {text!r} is not valid YAML ({exc.__class__.__name__})")


def add_config_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per PretrainConfig field (but ``exclude``), in one argument group per section of the config (what
    to train, data, augmentation, model, optimisation, run, monitoring); defaults are suppressed so that YAML
    values are not overridden."""
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    for title, names in config_groups().items():
        names = [n for n in names if n not in exclude]
        if not names:
            continue
        group = parser.add_argument_group(title)
        for name in names:
            f = fields[name]
            meta = dict(f.metadata)
            help_text = meta.pop("help", "")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = meta.pop("default_help", default)
            kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f"{help_text} (default: {shown})"}
            if isinstance(default, bool):
                kwargs["action"] = argparse.BooleanOptionalAction
            elif isinstance(default, dict):
                kwargs.update(action="append", type=_key_value, metavar="KEY=VALUE")
            else:
                kwargs["type"] = meta.pop("type", type(default))
                kwargs.update(meta)
            spellings = [option_flag(other) for other, canonical in SPELLINGS.items() if canonical == name]
            group.add_argument(option_flag(name), *spellings, **kwargs)


#: Options a resumed run does not take from the run it resumes (they say what this invocation does).
_PER_INVOCATION = ("resume", "extend", "overwrite", "out")


def saved_options(out: str) -> dict[str, Any]:
    """The options of the run in ``out`` (its ``config.yaml``), without :data:`_PER_INVOCATION`; empty when it
    has none."""
    path = Path(out).expanduser() / "config.yaml"
    if not path.is_file():
        return {}
    return {k: v for k, v in load_yaml(path).items() if k not in _PER_INVOCATION}


def resume_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> PretrainConfig:
    """The options of ``pretrain``: with ``--resume``, the run's own (its ``config.yaml``) unless ``--recipe``,
    ``--config`` or a flag sets them, so that ``pretrain --out RUN --resume`` needs nothing retyped. What this
    invocation changes is named on stderr (a change of what makes the run what it is, :data:`RUN_IDENTITY`, is
    the resume's to accept, with ``--extend``, or refuse)."""
    cfg = config_from_args(args, base)
    if not cfg.resume:
        return cfg
    saved = saved_options(cfg.out)
    if not saved:
        return cfg  # nothing to resume from: the run itself says so (no checkpoint)
    resumed = config_from_args(args, {**(base or {}), **saved})
    changed = [f"{option_flag(k)} {getattr(resumed, k)!r} (the run had {v!r})" for k, v in saved.items()
               if k in resumed.to_dict() and k not in RUN_IDENTITY and _differs(resumed.to_dict()[k], v)]
    if changed:
        print(f"note: resuming {cfg.out} with {'; '.join(changed)}", file=sys.stderr)
    return resumed


def _differs(a: Any, b: Any) -> bool:
    return (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b)


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> PretrainConfig:
    """Options from ``base`` < ``--recipe`` < ``--config`` YAML < flags."""
    values: dict[str, Any] = dict(base or {})
    if getattr(args, "recipe", None):
        values.update(get_recipe(args.recipe))
    if getattr(args, "config", None):
        import yaml

        try:
            values.update(load_yaml(args.config))
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {args.config} is not valid YAML: {exc}") from exc
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    if "augment" in given:
        given["augment"] = {**values.get("augment", {}), **dict(given["augment"])}
    values.update(given)
    return PretrainConfig.from_dict(values)


def _interrupted_text(argv: Sequence[str] | None, cfg: PretrainConfig) -> str:
    """What Ctrl-C prints after ``pretrain``: on a line of its own, the checkpoint that survives and the command
    that resumes it (:func:`~contrastkit.train.run_folder.interrupted_message`)."""
    from ..train.run_folder import interrupted_message

    argv = list(sys.argv[1:] if argv is None else argv)
    text = interrupted_message(Path(cfg.out).expanduser() / "last.pt", argv,
                               overwrite_from_config=cfg.overwrite and "--overwrite" not in argv)
    return ("\n" if cfg.progress else "") + text  # the progress bar's line may be unfinished


def _train(args: argparse.Namespace, argv: Sequence[str] | None, cfg: PretrainConfig) -> None:
    """Pretrain with ``cfg``, print the summary (one line under torchrun); Ctrl-C says how to resume."""
    from ..train import pretrain

    try:
        summary = pretrain(cfg)
    except KeyboardInterrupt:
        args.interrupted = _interrupted_text(argv, cfg)
        raise
    if summary.get("rank", 0) == 0:
        print_json(summary)


def _run_pretrain(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    _train(args, argv, resume_config(args))


def _run_distill(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    """``contrastkit distill``: the teacher's architecture and input size unless given, one view per image."""
    from ..methods.distill import student_defaults

    teacher = getattr(args, "teacher", None)
    if not teacher:
        raise ValueError("--teacher FINETUNED.pt is required (write one with 'contrastkit eval --protocol "
                         "finetune --save PATH')")
    base = {**student_defaults(teacher), "method": "distill", "n_views": 1, "out": "runs/distill"}
    _train(args, argv, resume_config(args, base))


def register(sub) -> None:
    """Add ``pretrain`` and ``distill`` to the command line's subcommands."""
    p = sub.add_parser("pretrain", help="pretrain an encoder (SimCLR, SupCon or cross-entropy)")
    p.add_argument("--config", help="YAML file of options; command-line flags override it")
    p.add_argument("--recipe", help=f"a named set of options (contrastkit.recipes: {', '.join(sorted(RECIPES))}); "
                                    "the YAML file and flags override it")
    add_config_options(p)
    p.set_defaults(handler=_run_pretrain)

    d = sub.add_parser("distill", help="distil a fine-tuned teacher into a student on unlabelled images "
                                       "(SimCLRv2 Sec. 2.3); every pretrain option applies",
                       description="contrastkit distill --teacher FINETUNED.pt --data DATA --out OUT: train a "
                                   "student (default: the teacher's architecture, self-distillation) on the "
                                   "teacher's softened predictions with the pretraining loop; writes what "
                                   "pretrain writes and OUT/student.pt, a fine-tuned checkpoint for eval.")
    d.add_argument("--config", help="YAML file of options; command-line flags override it")
    d.add_argument("--recipe", help="a named set of options (contrastkit.recipes); the YAML file and flags "
                                    "override it")
    d.add_argument("--student", dest="encoder", default=argparse.SUPPRESS,
                   help="the student's encoder (default: the teacher's; same as --encoder)")
    add_config_options(d, exclude=NOT_FOR_DISTILL)
    d.set_defaults(handler=_run_distill)
