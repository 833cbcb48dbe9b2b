"""Options in one place (issue 17, issue 16 section 3): PretrainConfig.validate() with one message per option,
the config's sections as --help groups, the device rule, the process-group timeout and --sync-debug --sync-bn."""
from __future__ import annotations

import dataclasses
import datetime
import re

import pytest
import torch

from contrastkit.cli import build_parser
from contrastkit.config import PretrainConfig, config_groups, option_flag
from contrastkit.runtime import resolve_device
from contrastkit.train import run as run_module


@pytest.mark.parametrize("field, value, message", [
    ("width", 0.0, "--width must be > 0, got 0.0"),
    ("size", -1, "--size must be >= 0 (0: the preset's), got -1"),
    ("max_steps", -1, "--max-steps must be >= 0 (0: off), got -1"),
    ("time_budget_s", -1.0, "--time-budget-s must be >= 0 (0: off), got -1.0"),
    ("knn_k", 0, "--knn-k must be >= 1, got 0"),
    ("knn_every", -1, "--knn-every must be >= 0 (0: off), got -1"),
    ("log_every", 0, "--log-every must be >= 1, got 0"),
    ("momentum", 1.0, "--momentum must be in [0, 1), got 1.0"),
    ("weight_decay", -1.0, "--weight-decay must be >= 0, got -1.0"),
    ("margin", -0.1, "--margin must be >= 0, got -0.1"),
    ("knn_temperature", 0.0, "--knn-temperature must be > 0, got 0.0"),
    ("proj_hidden_dim", -1, "--proj-hidden-dim must be >= 0"),
    ("dist_timeout_s", 0.0, "--dist-timeout-s must be > 0, got 0.0"),
])
def test_one_option_one_message(field, value, message):
    with pytest.raises(ValueError) as info:
        dataclasses.replace(PretrainConfig(device="cpu"), **{field: value}).validate()
    text = str(info.value)
    assert message in text
    assert re.findall(r"--[a-z][a-z0-9-]*", text) == [option_flag(field)]  # no other option named


def test_the_defaults_are_valid():
    PretrainConfig(device="cpu").validate()


def test_sections_cover_every_field_once_and_are_help_groups(capsys):
    groups = config_groups()
    assert list(groups) == ["what to train", "what to train: momentum encoder and queue", "data", "augmentation",
                            "model", "optimisation", "run", "monitoring"]
    names = [n for members in groups.values() for n in members]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(PretrainConfig)) and len(set(names)) == len(names)
    assert "dist_timeout_s" in groups["run"] and "knn_every" in groups["monitoring"] and "lr" in groups["optimisation"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--help"])
    out = capsys.readouterr().out
    for title in groups:
        assert f"\n{title}:\n" in out, title
    model_at = out.index("\nmodel:\n")
    assert model_at < out.index("  --width", model_at) < out.index("\noptimisation:\n")


def _cuda_available(monkeypatch, available=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)


@pytest.mark.parametrize("name, local_rank, expected", [
    ("cuda", "3", "cuda:3"),  # torchrun --device cuda: each process its own GPU
    ("auto", "1", "cuda:1"),
    ("cuda:2", "1", "cuda:2"),  # an explicit index is kept
    ("cuda", None, "cuda:0"),  # outside torchrun
])
def test_a_bare_cuda_means_the_local_rank(monkeypatch, name, local_rank, expected):
    _cuda_available(monkeypatch)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert resolve_device(name) == torch.device(expected)


def test_device_errors(monkeypatch):
    _cuda_available(monkeypatch, False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda asked for, but CUDA is not available"):
        resolve_device("cuda", "--device")
    with pytest.raises(ValueError, match="--device must be cpu, cuda, cuda:N or auto, got 'tpu9'"):
        resolve_device("tpu9", "--device")
    with pytest.raises(TypeError, match="device must be a str or torch.device, got int"):
        resolve_device(0)


def test_sync_debug_with_sync_bn_is_refused(monkeypatch):
    _cuda_available(monkeypatch)
    cfg = PretrainConfig(device="cuda", sync_debug=True, sync_bn=True)
    with pytest.raises(ValueError, match="--sync-debug cannot check a run with --sync-bn: SyncBatchNorm reads"):
        cfg.validate()
    dataclasses.replace(cfg, sync_bn=False).validate()  # each alone is fine
    dataclasses.replace(cfg, sync_debug=False).validate()


def test_the_process_group_timeout_is_the_option(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(run_module.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(run_module.dist, "init_process_group", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(run_module.dist, "destroy_process_group", lambda: seen.update(destroyed=True))
    with run_module.process_group(torch.device("cpu"), 90.0):
        assert seen == {"backend": "gloo", "timeout": datetime.timedelta(seconds=90)}
        monkeypatch.setattr(run_module.dist, "is_initialized", lambda: True)
    assert seen["destroyed"]  # the group it created is left when the block ends


def test_a_process_group_the_caller_joined_is_left_to_it(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(run_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(run_module.dist, "init_process_group", lambda **kwargs: pytest.fail("joined twice"))
    monkeypatch.setattr(run_module.dist, "destroy_process_group", lambda: pytest.fail("destroyed the caller's"))
    monkeypatch.setattr(run_module.ckdist, "get_rank", lambda: 1)
    monkeypatch.setattr(run_module.ckdist, "get_world_size", lambda: 2)
    with run_module.process_group(torch.device("cpu"), 90.0) as (rank, world):
        assert (rank, world) == (1, 2)


def test_supcon_takes_its_own_temperature_unless_one_is_set(tmp_path):
    """Issue 21: a method's defaults follow the method (SupCon Sec. 4: 0.1; SimCLR App. B.9: 0.5)."""
    import yaml

    from conftest import TINY, make_image_folder
    from contrastkit.cli import config_from_args, main
    from contrastkit.methods import DataInfo, get_method, with_method_defaults

    def parsed(*argv):
        return config_from_args(build_parser().parse_args(["pretrain", *argv]))

    assert parsed("--method", "supcon").temperature is None  # unset until the run fills in the method's
    assert with_method_defaults(parsed("--method", "supcon")).temperature == 0.1
    assert with_method_defaults(parsed("--method", "simclr")).temperature == 0.5
    assert with_method_defaults(parsed("--method", "supcon", "--temperature", "0.3")).temperature == 0.3
    data = DataInfo([0, 1, 0, 1], ["a", "b"], 16, "toy")
    for method, tau in (("supcon", 0.1), ("simclr", 0.5)):
        cfg = with_method_defaults(PretrainConfig(method=method, width=0.125))
        assert get_method(method).build(cfg, data).objective.loss.temperature == tau

    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)
    common = ["pretrain", "--method", "supcon", "--data", str(folder), "--epochs", "1", *TINY, "--batch-size", "6",
              "--size", "16", "--preset", "cifar", "--knn-every", "0", "--device", "cpu", "--max-steps", "1"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["temperature"] == 0.1
    assert main([*common, "--out", str(tmp_path / "b"), "--temperature", "0.25"]) == 0
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["temperature"] == 0.25


def _failed_start(tmp_path, capsys, folder, *extra):
    from conftest import TINY
    from contrastkit.cli import main

    out = tmp_path / "run"
    argv = ["pretrain", "--data", str(folder), "--epochs", "1", *TINY, "--batch-size", "6", "--size", "16",
            "--preset", "cifar", "--knn-every", "0", "--device", "cpu", "--out", str(out), *extra]
    assert main(argv) == 2
    return out, capsys.readouterr().err


def test_failed_starts_leave_no_output_folder(tmp_path, capsys):
    """Issue 21: the data and the model are built before OUT is created, so a failed start leaves nothing."""
    from conftest import make_image_folder

    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)
    out, err = _failed_start(tmp_path, capsys, folder, "--encoder", "timm:no_such_model")
    assert "no_such_model" in err and not out.exists()
    out, err = _failed_start(tmp_path, capsys, folder, "--batch-size", "1")
    assert "--batch-size must be >= 2 for --method simclr" in err and not out.exists()
    out, err = _failed_start(tmp_path, capsys, folder, "--method", "supcon", "--batch-size", "100")
    assert "larger than the training set" in err and not out.exists()
    bad = folder / "train" / "class_1" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out, err = _failed_start(tmp_path, capsys, folder, "--augment-on", "device", "--num-workers", "0")
    assert f"cannot read image file {str(bad)!r}" in err and not out.exists()
    # per-image workers meet the image at the first batch, after OUT was created: the failed start removes it
    out, err = _failed_start(tmp_path, capsys, folder, "--augment-on", "workers", "--num-workers", "0",
                             "--batch-size", "12")
    assert f"cannot read image file {str(bad)!r}" in err and not out.exists()
    out.mkdir()  # a folder the user made is kept, emptied of what the run wrote
    out, err = _failed_start(tmp_path, capsys, folder, "--augment-on", "workers", "--num-workers", "0",
                             "--batch-size", "12")
    assert f"cannot read image file {str(bad)!r}" in err and out.is_dir() and not any(out.iterdir())


def test_out_naming_a_file(tmp_path, capsys):
    from conftest import make_image_folder

    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)
    (tmp_path / "run").write_text("not a folder")
    out, err = _failed_start(tmp_path, capsys, folder)
    assert f"--out {out} is a file; expected a folder" in err and "Errno" not in err


def test_options_accept_both_spellings_and_unknown_keys_get_a_suggestion(tmp_path):
    """Issue 31: --labeled-fraction and --labelled-weight are accepted in either spelling; an unknown YAML key names
    the closest option instead of listing all of them."""
    from contrastkit.cli import config_from_args

    cfg = config_from_args(build_parser().parse_args(["pretrain", "--labelled-fraction", "0.5"]))
    assert cfg.labeled_fraction == 0.5
    assert PretrainConfig.from_dict({"labeled_weight": 0.3}).labelled_weight == 0.3
    with pytest.raises(ValueError, match=r"unknown config key 'bath_size' \(did you mean 'batch_size'\?\)") as err:
        PretrainConfig.from_dict({"bath_size": 64})
    assert "knn_temperature" not in str(err.value)  # not the whole list of options
    with pytest.raises(ValueError, match=r"--micro-batch-size must be >= 0 \(0: off\), got -1"):
        PretrainConfig(micro_batch_size=-1).validate()
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["pretrain"].format_help().split())
    assert "--teacher TEACHER distill: the fine-tuned teacher (eval --protocol finetune --save) (default: none)" \
        in help_text
