"""Command line: a thin shell over the Python API.

    contrastkit pretrain --method simclr --data digits --epochs 10 --out runs/x
    contrastkit eval --checkpoint runs/x/last.pt --protocol knn|linear|finetune|retrieval|all
    contrastkit embed --checkpoint runs/x/last.pt --out runs/x/embeddings
    contrastkit distill --teacher runs/x/finetuned.pt --data DATA --out runs/d
    contrastkit index --checkpoint runs/x/last.pt --images photos/ --out photos.index
    contrastkit search --index photos.index --query me.jpg --out results/
    contrastkit preview-augment --data digits --out grid.png
    contrastkit demo --out runs/demo
    contrastkit experiment NAME --budget smoke|cpu|gpu --out DIR
    contrastkit export --checkpoint runs/x --format torchvision|timm|safetensors|torchscript|onnx|pt2|hub --out f
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Sequence

from . import __version__
from .cli_search import _add_index_parser, _add_search_parser, _run_index, _run_search
from .config import PretrainConfig, config_groups, load_yaml, option_flag

__all__ = ["main", "build_parser"]


def _key_value(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip().replace("-", "_"), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"the value of {text!r} is not valid YAML ({exc.__class__.__name__})")


def _add_config_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
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
            group.add_argument(option_flag(name), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastkit", description="Contrastive representation learning: "
                                     "SimCLR (Chen et al. 2020) and SupCon (Khosla et al. 2020).")
    parser.add_argument("--version", action="version", version=f"contrastkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("pretrain", help="pretrain an encoder (SimCLR, SupCon or cross-entropy)")
    p.add_argument("--config", help="YAML file of options; command-line flags override it")
    p.add_argument("--recipe", help="a named set of options (contrastkit.recipes: cifar-budget); the YAML file and "
                                    "flags override it")
    _add_config_options(p)

    e = sub.add_parser("eval", help="evaluate a checkpoint: knn, linear, finetune, retrieval or all")
    e.add_argument("--checkpoint", required=True, help="a last.pt written by pretrain, or its run folder")
    e.add_argument("--protocol", default="knn", choices=("knn", "linear", "finetune", "retrieval", "all",
                                                         "classifier"),
                   help="evaluation protocol; classifier scores a fine-tuned checkpoint's own classifier "
                        "(default: knn)")
    e.add_argument("--data", default=None, help="data set to evaluate on (default: the checkpoint's; another one "
                                                "is transfer)")
    e.add_argument("--data-root", default="~/.cache/contrastkit/datasets", help="torchvision data root")
    e.add_argument("--label-fraction", type=float, default=None,
                   help="finetune: fraction of training labels (SimCLR: 0.01 and 0.1) (default: 0.1)")
    e.add_argument("--from-scratch", action="store_true",
                   help="finetune: a randomly initialised encoder instead (the supervised baseline on the subset)")
    e.add_argument("--linear-epochs", type=int, default=None, help="linear: epochs of the probe (default: 100)")
    e.add_argument("--finetune-epochs", type=int, default=None, help="finetune: epochs (default: 30)")
    e.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)  # refused, naming the two above
    e.add_argument("--projection", action="store_true", help="knn, linear, retrieval: evaluate z = g(h) instead of h")
    e.add_argument("--from-head-layer", type=int, default=0,
                   help="finetune from the output of the head's first L Linear-BN-ReLU blocks (0: h; SimCLRv2 "
                        "Sec. 2.2: 1 of a 3-layer head) (default: 0)")
    e.add_argument("--save", default=None, help="finetune: write the fine-tuned network (encoder, head layers, "
                                                "classifier) to this checkpoint, for eval, embed and distill")
    e.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    e.add_argument("--seed", type=int, default=0, help="seed of subsets and classifiers (default: 0)")
    e.add_argument("--num-workers", type=int, default=2, help="data loading workers (default: 2)")
    e.add_argument("--malloc", choices=("auto", "off"), default="auto",
                   help="auto: on CPU, keep freed memory between batches (as pretrain --malloc; default); off")

    m = sub.add_parser("embed", help="export h (or z) for every image, with its path and label")
    m.add_argument("--checkpoint", required=True, help="a last.pt written by pretrain, or its run folder")
    m.add_argument("--data", default=None, help="data set (default: the checkpoint's)")
    m.add_argument("--data-root", default="~/.cache/contrastkit/datasets", help="torchvision data root")
    m.add_argument("--split", default=None, choices=("train", "test"),
                   help="which split (default: test where there is one, else train: every image of an unlabelled "
                        "folder)")
    m.add_argument("--out", required=True, help="output prefix: writes OUT.npy, OUT.csv and OUT.json")
    m.add_argument("--projection", action="store_true", help="export z = g(h) instead of h")
    m.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    m.add_argument("--num-workers", type=int, default=2, help="data loading workers (default: 2)")
    m.add_argument("--skip-bad-files", action="store_true", help="accepted for symmetry with pretrain: embed always leaves\n"
                        "unreadable image files out, counted and listed in the result")
    m.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_index_parser(sub)
    _add_search_parser(sub)

    a = sub.add_parser("preview-augment", help="save an image grid of augmented views")
    a.add_argument("--data", default="digits", help="data set or folder (default: digits)")
    a.add_argument("--data-root", default="~/.cache/contrastkit/datasets", help="torchvision data root")
    a.add_argument("--out", default="augment_preview.png", help="image file to write; .png, .jpg, .jpeg or .webp "
                                                                "picks the format (default: augment_preview.png)")
    a.add_argument("--skip-bad-files", action="store_true", help="pass over unreadable image files")
    a.add_argument("--preset", default="auto", help="augmentation preset (default: auto)")
    a.add_argument("--images", type=int, default=6, help="number of images (rows) (default: 6)")
    a.add_argument("--views", type=int, default=4, help="views per image (default: 4)")
    a.add_argument("--seed", type=int, default=0, help="seed (default: 0)")

    d = sub.add_parser("demo", help="the offline demo: SimCLR on digits, then kNN and linear evaluation "
                                    "against a random encoder and raw pixels")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: the demo's)")
    d.add_argument("--seed", type=int, default=0, help="seed (default: 0)")

    _add_distill_parser(sub)

    x = sub.add_parser("experiment", help="reproduce one of the seed's claims (tables and plots)")
    x.add_argument("name", help="experiment name (run 'contrastkit experiment list')")
    x.add_argument("--data", default=None, help="data set or folder (default: the budget's: digits for smoke, the "
                                                "shared CIFAR-10 JPEGs for cpu, cifar10 for gpu)")
    x.add_argument("--budget", default="smoke", choices=("smoke", "cpu", "gpu"), help="size of the runs "
                                                                                       "(default: smoke)")
    x.add_argument("--out", default=None, help="output folder (default: runs/experiments/NAME)")
    x.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    x.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    _add_export_parser(sub)
    return parser


def _add_export_parser(sub) -> None:
    from .export.formats import FORMATS

    p = sub.add_parser("export", help="write a checkpoint's encoder as a torchvision or timm state_dict, "
                                      "safetensors, TorchScript, ONNX, torch.export (pt2) or a Hub folder, verified "
                                      "against contrastkit's h")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by pretrain, or its run folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="torchvision / timm: a state_dict (plus a "
                   ".json sidecar) for torchvision.models.resnetN() / timm.create_model(name, num_classes=0); "
                   "safetensors: the same tensors with metadata; torchscript, onnx, pt2 (torch.export): the encoder alone; "
                   "hub: a folder with model.safetensors, config.json and a model card (README.md)")
    p.add_argument("--out", required=True, help="the file to write, named for the format (.safetensors, "
                                                ".torchscript, .onnx, .pt2), or the folder of --format hub")
    p.add_argument("--include-head", action="store_true", help="also export the projection head g")


def _run_export(args: argparse.Namespace) -> None:
    from .export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.out, include_head=args.include_head)
    print(f"wrote {result['out']} ({args.format}, {result['bytes'] / 1e6:.1f} MB); verified against contrastkit's "
          f"h at {len(result['verified_shapes'])} input shapes: largest difference {result['max_abs_diff']:.3g} (relative "
          f"{result['max_rel_diff']:.3g}, tolerance {result['tolerance']:g})")
    _print_json(result)


def _add_distill_parser(sub) -> None:
    p = sub.add_parser("distill", help="distil a fine-tuned teacher into a student on unlabelled images "
                                       "(SimCLRv2 Sec. 2.3); every pretrain option applies",
                       description="contrastkit distill --teacher FINETUNED.pt --data DATA --out OUT: train a "
                                   "student (default: the teacher's architecture, self-distillation) on the "
                                   "teacher's softened predictions with the pretraining loop; writes what "
                                   "pretrain writes and OUT/student.pt, a fine-tuned checkpoint for eval.")
    p.add_argument("--config", help="YAML file of options; command-line flags override it")
    p.add_argument("--recipe", help="a named set of options (contrastkit.recipes); the YAML file and flags "
                                    "override it")
    p.add_argument("--student", dest="encoder", default=argparse.SUPPRESS,
                   help="the student's encoder (default: the teacher's; same as --encoder)")
    _add_config_options(p, exclude=_NOT_FOR_DISTILL)


#: Pretrain options that do not apply to distillation (the loss is the distillation loss; the student has no
#: projection head).
_NOT_FOR_DISTILL = ("method", "loss", "supcon_variant", "temperature", "margin", "l2_normalize", "semi_hard",
                    "labeled_fraction", "head", "proj_dim", "proj_hidden_dim", "head_layers")


def _distill(args: argparse.Namespace) -> dict[str, Any]:
    """``contrastkit distill``: the teacher's architecture and input size unless given, one view per image."""
    from .distillation import distill, student_defaults

    teacher = getattr(args, "teacher", None)
    if not teacher:
        raise ValueError("--teacher FINETUNED.pt is required (write one with 'contrastkit eval --protocol "
                         "finetune --save PATH')")
    base = {**student_defaults(teacher), "method": "distill", "n_views": 1, "out": "runs/distill"}
    return distill(config_from_args(args, base))


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> PretrainConfig:
    """Options from ``base`` < ``--recipe`` < ``--config`` YAML < flags."""
    values: dict[str, Any] = dict(base or {})
    if getattr(args, "recipe", None):
        from .recipes import get_recipe

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


def _print_json(result: dict) -> None:
    print(json.dumps(result, default=float))


def _error_text(exc: BaseException) -> str:
    """The message of an error; one re-raised from a DataLoader worker keeps only the original's last line."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]  # "ValueError: cannot read image file ..."
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def _interrupted_text(argv: Sequence[str] | None, cfg: PretrainConfig | None) -> str:
    """What Ctrl-C prints: for ``pretrain``, on a line of its own, the checkpoint that survives and the command
    that resumes it (:func:`~contrastkit.train.interrupt.interrupted_message`)."""
    if cfg is None:
        return "interrupted"
    from pathlib import Path

    from .train.interrupt import interrupted_message

    argv = list(sys.argv[1:] if argv is None else argv)
    text = interrupted_message(Path(cfg.out).expanduser() / "last.pt", argv,
                               overwrite_from_config=cfg.overwrite and "--overwrite" not in argv)
    return ("\n" if cfg.progress else "") + text  # the progress bar's line may be unfinished


def _check_eval_options(args: argparse.Namespace) -> None:
    """Refuses eval options the chosen protocol does not use, before torch is imported."""
    from .eval_options import check_eval_options

    if args.epochs is not None:
        raise ValueError("eval has no --epochs: use --linear-epochs N (linear probe) or --finetune-epochs N "
                         "(finetune)")
    check_eval_options(args.protocol, label_fraction=args.label_fraction, from_scratch=args.from_scratch,
                       linear_epochs=args.linear_epochs, finetune_epochs=args.finetune_epochs,
                       projection=args.projection, from_head_layer=args.from_head_layer or None,
                       save=args.save)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "eval":
        try:
            _check_eval_options(args)
        except ValueError as exc:
            print(f"contrastkit eval: error: {exc}", file=sys.stderr)
            return 2
    from .train.checkpoint import CheckpointError

    cfg = None
    try:
        if args.command == "pretrain":
            from .train import pretrain

            cfg = config_from_args(args)
            summary = pretrain(cfg)
            if summary.get("rank", 0) == 0:  # under torchrun, one summary line
                _print_json(summary)
        elif args.command == "distill":
            summary = _distill(args)
            if summary.get("rank", 0) == 0:
                _print_json(summary)
        elif args.command == "eval":
            from .runner import evaluate_checkpoint

            result = evaluate_checkpoint(args.checkpoint, args.protocol, data=args.data, data_root=args.data_root,
                                         label_fraction=args.label_fraction, from_scratch=args.from_scratch,
                                         projection=args.projection, device=args.device,
                                         seed=args.seed, num_workers=args.num_workers,
                                         linear_epochs=args.linear_epochs, finetune_epochs=args.finetune_epochs,
                                         malloc=args.malloc, from_head_layer=args.from_head_layer,
                                         save=args.save)
            _print_json(result)
        elif args.command == "embed":
            from .runner import embed_checkpoint

            _print_json(embed_checkpoint(args.checkpoint, args.out, data=args.data, data_root=args.data_root,
                                         split=args.split, projection=args.projection, device=args.device,
                                         num_workers=args.num_workers, progress=args.progress))
        elif args.command in ("index", "search"):
            _run_index(args) if args.command == "index" else _run_search(args)
        elif args.command == "preview-augment":
            from .runner import preview_augment

            path = preview_augment(args.data, args.out, data_root=args.data_root, preset=args.preset,
                                   n_images=args.images, n_views=args.views, seed=args.seed,
                                   skip_bad_files=args.skip_bad_files)
            print(f"wrote {path}")
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(args.out, epochs=args.epochs, seed=args.seed)
        elif args.command == "experiment":
            from .experiments import run_experiment

            run_experiment(args.name, data=args.data, budget=args.budget, out=args.out, device=args.device,
                           seed=args.seed)
        elif args.command == "export":
            _run_export(args)
    except (ValueError, TypeError, OSError, CheckpointError, RuntimeError) as exc:
        print(f"contrastkit {args.command}: error: {_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted_text(argv, cfg), file=sys.stderr)
        return 130
    return 0
