"""Command line: a thin shell over the Python API.

    contrastkit pretrain --method simclr --data digits --epochs 10 --out runs/x
    contrastkit eval --checkpoint runs/x/last.pt --protocol knn|linear|finetune|retrieval|all
    contrastkit embed --checkpoint runs/x/last.pt --out runs/x/embeddings
    contrastkit index --checkpoint runs/x/last.pt --images photos/ --out photos.index
    contrastkit search --index photos.index --query me.jpg --out results/
    contrastkit preview-augment --data digits --out grid.png
    contrastkit demo --out runs/demo
    contrastkit experiment NAME --budget smoke|cpu|gpu --out DIR
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Sequence

from .cli_search import _add_index_parser, _add_search_parser, _run_index, _run_search
from .config import PretrainConfig, load_yaml

__all__ = ["main", "build_parser"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _key_value(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip().replace("-", "_"), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"the value of {text!r} is not valid YAML ({exc.__class__.__name__})")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per PretrainConfig field; defaults are suppressed so that YAML values are not overridden."""
    for f in dataclasses.fields(PretrainConfig):
        meta = dict(f.metadata)
        help_text = meta.pop("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f"{help_text} (default: {default})"}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, dict):
            kwargs.update(action="append", type=_key_value, metavar="KEY=VALUE")
        else:
            kwargs["type"] = meta.pop("type", type(default))
            kwargs.update(meta)
        parser.add_argument(_flag(f.name), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastkit", description="Contrastive representation learning: "
                                     "SimCLR (Chen et al. 2020) and SupCon (Khosla et al. 2020).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("pretrain", help="pretrain an encoder (SimCLR, SupCon or cross-entropy)")
    p.add_argument("--config", help="YAML file of options; command-line flags override it")
    p.add_argument("--recipe", help="a named set of options (contrastkit.recipes: cifar-budget); the YAML file and "
                                    "flags override it")
    _add_config_options(p)

    e = sub.add_parser("eval", help="evaluate a checkpoint: knn, linear, finetune, retrieval or all")
    e.add_argument("--checkpoint", required=True, help="a last.pt written by pretrain")
    e.add_argument("--protocol", default="knn", choices=("knn", "linear", "finetune", "retrieval", "all"),
                   help="evaluation protocol (default: knn)")
    e.add_argument("--data", default=None, help="data set to evaluate on (default: the checkpoint's; another one "
                                                "is transfer)")
    e.add_argument("--data-root", default="~/.cache/contrastkit/datasets", help="torchvision data root")
    e.add_argument("--label-fraction", type=float, default=0.1,
                   help="fraction of training labels for --protocol finetune (SimCLR: 0.01 and 0.1) (default: 0.1)")
    e.add_argument("--from-scratch", action="store_true",
                   help="finetune a randomly initialised encoder instead (the supervised baseline on the subset)")
    e.add_argument("--epochs", type=int, default=None, help="epochs of the linear / finetune protocols "
                                                            "(default: the protocol's)")
    e.add_argument("--linear-epochs", type=int, default=None, help="epochs of the linear protocol, overriding "
                                                                   "--epochs (default: 100)")
    e.add_argument("--finetune-epochs", type=int, default=None, help="epochs of the finetune protocol, overriding "
                                                                     "--epochs (default: 30)")
    e.add_argument("--projection", action="store_true", help="evaluate z = g(h) instead of h")
    e.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    e.add_argument("--seed", type=int, default=0, help="seed of subsets and classifiers (default: 0)")
    e.add_argument("--num-workers", type=int, default=2, help="data loading workers (default: 2)")
    e.add_argument("--malloc", choices=("auto", "off"), default="auto",
                   help="auto: on CPU, keep freed memory between batches (as pretrain --malloc; default); off")

    m = sub.add_parser("embed", help="export h (or z) for every image, with its path and label")
    m.add_argument("--checkpoint", required=True, help="a last.pt written by pretrain")
    m.add_argument("--data", default=None, help="data set (default: the checkpoint's)")
    m.add_argument("--data-root", default="~/.cache/contrastkit/datasets", help="torchvision data root")
    m.add_argument("--split", default=None, choices=("train", "test"),
                   help="which split (default: test where there is one, else train: every image of an unlabelled "
                        "folder)")
    m.add_argument("--out", required=True, help="output prefix: writes OUT.npy, OUT.csv and OUT.json")
    m.add_argument("--projection", action="store_true", help="export z = g(h) instead of h")
    m.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    m.add_argument("--num-workers", type=int, default=2, help="data loading workers (default: 2)")
    m.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_index_parser(sub)
    _add_search_parser(sub)

    a = sub.add_parser("preview-augment", help="save a PNG grid of augmented views")
    a.add_argument("--data", default="digits", help="data set or folder (default: digits)")
    a.add_argument("--data-root", default="~/.cache/contrastkit/datasets", help="torchvision data root")
    a.add_argument("--out", default="augment_preview.png", help="PNG file to write (default: augment_preview.png)")
    a.add_argument("--preset", default="auto", help="augmentation preset (default: auto)")
    a.add_argument("--images", type=int, default=6, help="number of images (rows) (default: 6)")
    a.add_argument("--views", type=int, default=4, help="views per image (default: 4)")
    a.add_argument("--seed", type=int, default=0, help="seed (default: 0)")

    d = sub.add_parser("demo", help="the offline demo: SimCLR on digits, then kNN and linear evaluation "
                                    "against a random encoder and raw pixels")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: the demo's)")
    d.add_argument("--seed", type=int, default=0, help="seed (default: 0)")

    x = sub.add_parser("experiment", help="reproduce one of the seed's claims (tables and plots)")
    x.add_argument("name", help="experiment name (run 'contrastkit experiment list')")
    x.add_argument("--data", default=None, help="data set or folder (default: the budget's: digits for smoke, the "
                                                "shared CIFAR-10 JPEGs for cpu, cifar10 for gpu)")
    x.add_argument("--budget", default="smoke", choices=("smoke", "cpu", "gpu"), help="size of the runs "
                                                                                       "(default: smoke)")
    x.add_argument("--out", default=None, help="output folder (default: runs/experiments/NAME)")
    x.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    x.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    return parser


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    values: dict[str, Any] = {}
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .train.checkpoint import CheckpointError

    try:
        if args.command == "pretrain":
            from .train import pretrain

            summary = pretrain(config_from_args(args))
            if summary.get("rank", 0) == 0:  # under torchrun, one summary line
                _print_json(summary)
        elif args.command == "eval":
            from .runner import evaluate_checkpoint

            result = evaluate_checkpoint(args.checkpoint, args.protocol, data=args.data, data_root=args.data_root,
                                         label_fraction=args.label_fraction, from_scratch=args.from_scratch,
                                         epochs=args.epochs, projection=args.projection, device=args.device,
                                         seed=args.seed, num_workers=args.num_workers,
                                         linear_epochs=args.linear_epochs, finetune_epochs=args.finetune_epochs,
                                         malloc=args.malloc)
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
                                   n_images=args.images, n_views=args.views, seed=args.seed)
            print(f"wrote {path}")
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(args.out, epochs=args.epochs, seed=args.seed)
        elif args.command == "experiment":
            from .experiments import run_experiment

            run_experiment(args.name, data=args.data, budget=args.budget, out=args.out, device=args.device,
                           seed=args.seed)
    except (ValueError, TypeError, OSError, CheckpointError, RuntimeError) as exc:
        print(f"contrastkit {args.command}: error: {_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
