"""Bad options, bad checkpoints, an unwritable or full disk (issue 6): each a clear error at start,
before an epoch, and never a silent fresh start. None of these tests trains a step."""
from __future__ import annotations

import resource
import signal
from collections import namedtuple

import pytest
import torch

import contrastkit.runtime.files as files
from contrastkit.cli import build_parser, config_from_args, main
from contrastkit.models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from reliability._common import pretrain_args


def _run(argv, capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _assert_no_work(out) -> None:
    """Nothing of a run was written: no checkpoint, no log, no summary."""
    for name in ("last.pt", "metrics.jsonl", "summary.json", "config.yaml"):
        assert not (out / name).exists(), name


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--epochs", "-2"], "--epochs must be a positive integer, got -2"),
    (["--batch-size", "100"], "--batch-size 100 is larger than the training set (12 images)"),
    (["--temperature", "0"], "--temperature must be a finite number > 0, got 0.0"),
    (["--temperature", "-0.5"], "--temperature must be a finite number > 0"),
    (["--temperature", "nan"], "--temperature must be a finite number, got nan"),
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["--width", "inf"], "--width must be a finite number"),
    (["--min-lr-ratio", "-1"], "--min-lr-ratio must be in [0, 1]"),
    (["--checkpoint-every-steps", "-1"], "--checkpoint-every-steps must be >= 0"),
    (["--seed", "-1"], "--seed must be in [0, 2**32)"),
    (["--proj-dim", "0"], "--proj-dim must be >= 1"),
    (["--preset", "bogus"], "--preset must be auto or one of cifar, imagenet, got 'bogus'"),
    (["--device", "tpu9"], "--device must be cpu, cuda, cuda:N or auto, got 'tpu9'"),
    (["--encoder", "resnet19"], "unknown encoder 'resnet19'; known encoders: resnet18, resnet34, resnet50"),
    (["--augment", "rotate=[1"], "is not valid YAML"),
])
def test_bad_option_fails_at_start(folder, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    rc, err = _run(pretrain_args(folder, out, *extra), capsys)
    assert rc == 2 and message in err, err
    _assert_no_work(out)


def test_unknown_data_set_lists_the_known_ones(tmp_path, capsys):
    out = tmp_path / "run"
    rc, err = _run(["pretrain", "--data", "cifar11", "--out", str(out), "--epochs", "1"], capsys)
    assert rc == 2 and "'cifar11' is neither a known data set (digits, cifar10, cifar100, stl10)" in err
    _assert_no_work(out)


def test_empty_folder_and_empty_class_folder(folder, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, err = _run(pretrain_args(tmp_path / "empty", tmp_path / "a"), capsys)
    assert rc == 2 and "holds no image files" in err
    (folder / "train" / "class_7").mkdir()
    rc, err = _run(pretrain_args(folder, tmp_path / "b"), capsys)
    assert rc == 2 and f"class folder {folder / 'train' / 'class_7'} holds no image files" in err


def test_yaml_config_with_wrong_types_or_bad_syntax(folder, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("temperature: warm\n")
    rc, err = _run([*pretrain_args(folder, tmp_path / "a"), "--config", str(cfg)], capsys)
    assert rc == 2 and "--temperature must be a finite number, got 'warm' (str)" in err
    cfg.write_text("on_nonfinite: ignore\n")  # a YAML file bypasses argparse's choices
    rc, err = _run([*pretrain_args(folder, tmp_path / "b"), "--config", str(cfg)], capsys)
    assert rc == 2 and "--on-nonfinite must be one of stop, skip, got 'ignore'" in err
    cfg.write_text("epochs: [1\n")
    rc, err = _run([*pretrain_args(folder, tmp_path / "c"), "--config", str(cfg)], capsys)
    assert rc == 2 and f"config file {cfg} is not valid YAML" in err


def test_output_folder_not_writable(folder, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # root ignores chmod; a path below a file cannot be created by anyone
    rc, err = _run(pretrain_args(folder, blocker / "run"), capsys)
    assert rc == 2 and f"output folder {blocker / 'run'} is not writable" in err


def test_disk_full_at_start(folder, tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: usage(2**30, 2**30 - 2**20, 2**20))
    out = tmp_path / "run"
    rc, err = _run(pretrain_args(folder, out), capsys)
    assert rc == 2 and f"output folder {out} has only 1 MiB free; checkpoints need at least 200 MiB" in err
    _assert_no_work(out)


def _handmade_checkpoint(folder, out, *extra: str, weights_from: tuple[str, ...] = ()) -> dict:
    """last.pt as the run ``pretrain_args(folder, out, *extra)`` would write it, without training.
    ``weights_from``: options of another run whose model the weights come from."""
    cfg = config_from_args(build_parser().parse_args(pretrain_args(folder, out, *extra)))
    model_cfg = config_from_args(build_parser().parse_args(pretrain_args(folder, out, *weights_from)))
    state = {"model": build_model(model_cfg, None, 16).state_dict(), "config": cfg.to_dict(),
             "meta": {"image_size": 16, "classes": ["0", "1", "2"], "data": str(folder)}}
    save_checkpoint(state, out / "last.pt")
    return state


def test_resume_with_another_encoder(folder, tmp_path, capsys):
    out = tmp_path / "run"
    _handmade_checkpoint(folder, out)  # a resnet18 run
    rc, err = _run(pretrain_args(folder, out, "--encoder", "resnet34", "--resume"), capsys)
    assert rc == 2 and f"--resume: checkpoint {out / 'last.pt'} was written by a different run" in err
    assert "encoder: checkpoint 'resnet18', now 'resnet34'" in err


def test_resume_loads_strictly(folder, tmp_path, capsys):
    """Same options, but a weight missing and an unknown one: never loaded partially (strict=True)."""
    out = tmp_path / "run"
    state = _handmade_checkpoint(folder, out)
    state["model"].pop("encoder.backbone.conv1.weight")
    state["model"]["encoder.backbone.extra.weight"] = torch.zeros(3)
    save_checkpoint(state, out / "last.pt")
    rc, err = _run(pretrain_args(folder, out, "--resume"), capsys)
    assert rc == 2 and f"checkpoint {out / 'last.pt'} does not match the model" in err
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_resume_from_corrupt_checkpoint_never_starts_fresh(folder, tmp_path, capsys, damage):
    out = tmp_path / "run"
    _handmade_checkpoint(folder, out)
    path = out / "last.pt"
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00garbage" * 100, "empty": b""}[damage])
    damaged = path.read_bytes()
    rc, err = _run(pretrain_args(folder, out, "--resume"), capsys)
    assert rc == 2 and f"checkpoint {path} is corrupt or truncated" in err
    assert path.read_bytes() == damaged  # left as it was for inspection, not overwritten by a fresh run
    assert not (out / "metrics.jsonl").exists() and not (out / "summary.json").exists()


def test_eval_with_a_checkpoint_from_another_encoder(folder, tmp_path, capsys):
    out = tmp_path / "run"
    # The config says resnet34 but the weights are a resnet18's (a renamed or mixed-up file).
    _handmade_checkpoint(folder, out, "--encoder", "resnet34", weights_from=("--encoder", "resnet18"))
    rc, err = _run(["eval", "--checkpoint", str(out / "last.pt"), "--device", "cpu"], capsys)
    assert rc == 2 and f"checkpoint {out / 'last.pt'} does not match its own config's model" in err
    torch.save(build_model(config_from_args(build_parser().parse_args(["pretrain"])), None, 16).state_dict(),
               tmp_path / "plain.pt")  # a bare state dict, e.g. from torchvision
    rc, err = _run(["eval", "--checkpoint", str(tmp_path / "plain.pt"), "--device", "cpu"], capsys)
    assert rc == 2 and "is not a contrastkit checkpoint" in err


class _Payload:
    ran = False

    def __reduce__(self):
        return (_Payload._run, ())

    @staticmethod
    def _run():
        _Payload.ran = True
        return "pwned"


def test_loading_runs_no_pickled_code(tmp_path):
    torch.save({"model": {}, "config": {}, "x": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not _Payload.ran  # weights_only=True: the payload never ran


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """A real failed write (file size limit, as ENOSPC would): CheckpointError, last.pt intact, no .tmp."""
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(4)}, "config": {}}, path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(CheckpointError, match=f"could not write checkpoint {path}.*still holds the previous"):
            save_checkpoint({"model": {"w": torch.ones(1_000_000)}, "config": {}}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(4))
    assert not (tmp_path / "last.pt.tmp").exists()
