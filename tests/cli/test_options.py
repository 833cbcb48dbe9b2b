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
from contrastkit.device import resolve_device
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
    assert list(groups) == ["what to train", "data", "augmentation", "model", "optimisation", "run", "monitoring"]
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
    run_module.init_distributed(torch.device("cpu"), 90.0)
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(seconds=90)}
