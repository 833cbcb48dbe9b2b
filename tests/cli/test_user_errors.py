"""What a new user trips over (issue 21): checkpoint errors and run folders, preview formats, help without
torch, --skip-bad-files on every command that reads images, and eval options that do not apply."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from conftest import TINY, make_image_folder
from contrastkit.cli import main
from contrastkit.models import CheckpointError, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny SimCLR run (folder and run folder) shared by the tests that need a checkpoint."""
    root = tmp_path_factory.mktemp("user")
    data = make_image_folder(root / "data", per_class=4, size=16)
    out = root / "run"
    assert main(["pretrain", "--data", str(data), "--epochs", "1", "--out", str(out), *TINY, "--batch-size", "4",
                 "--size", "16", "--preset", "cifar", "--knn-every", "0", "--device", "cpu"]) == 0
    return data, out


def _cli(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# item 5: checkpoint errors, and a run folder wherever a checkpoint is taken

def _state():
    return {"model": {"w": torch.zeros(64)}, "config": {}}


def test_corrupt_checkpoints_say_what_is_wrong_and_never_advise_weights_only_false(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint(_state(), p)
    whole = p.read_bytes()
    cases = {"truncated": whole[: len(whole) // 2], "random": os.urandom(4096), "empty": b""}
    expected = {"truncated": "its end is missing", "random": "are not a torch.save file", "empty": "empty (0 bytes)"}
    for name, data in cases.items():
        p.write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(p)
        msg = str(info.value)
        assert f"checkpoint {p} is corrupt or truncated" in msg and expected[name] in msg, msg
        assert "weights_only" not in msg and ".prev.pt" not in msg  # no such file: not named
    torch.save({"model": {}, "config": {}, "x": Image.new("L", (1, 1))}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match="Python objects other than tensors") as info:
        load_checkpoint(tmp_path / "objects.pt")
    assert "weights_only=False" not in str(info.value) and "Re-running" not in str(info.value)


def test_the_previous_checkpoint_is_named_only_when_it_exists(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint(_state(), p)
    save_checkpoint(_state(), p)  # keeps last.prev.pt
    assert (tmp_path / "last.prev.pt").is_file()
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"the previous checkpoint {tmp_path / 'last.prev.pt'} exists"):
        load_checkpoint(p)


def test_a_run_folder_means_its_last_pt(run, tmp_path, capsys):
    data, out = run
    assert load_checkpoint(out)["model"].keys() == load_checkpoint(out / "last.pt")["model"].keys()
    rc, stdout, err = _cli(["eval", "--checkpoint", str(out), "--device", "cpu", "--num-workers", "0"], capsys)
    assert rc == 0, err
    assert json.loads(stdout)["checkpoint"] == str(out / "last.pt") and (out / "eval_knn.json").is_file()
    rc, stdout, err = _cli(["embed", "--checkpoint", str(out), "--out", str(tmp_path / "emb"), "--device", "cpu",
                            "--num-workers", "0"], capsys)
    assert rc == 0 and json.loads(stdout)["count"] == 18, err  # every image: 12 train and 6 test
    from contrastkit.models import load_checkpoint_model

    assert load_checkpoint_model(out)[1].data == load_checkpoint_model(out / "last.pt")[1].data
    (tmp_path / "empty_run").mkdir()
    rc, _, err = _cli(["eval", "--checkpoint", str(tmp_path / "empty_run")], capsys)
    assert rc == 2 and f"{tmp_path / 'empty_run'} is a folder without last.pt" in err


# item 8: preview-augment honours --out's extension

@pytest.mark.parametrize("ext, fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".JPEG", "JPEG"), (".webp", "WEBP")])
def test_preview_writes_the_format_of_its_extension(run, tmp_path, ext, fmt):
    out = tmp_path / f"grid{ext}"
    assert main(["preview-augment", "--data", str(run[0]), "--out", str(out), "--images", "2", "--views", "2"]) == 0
    with Image.open(out) as img:
        assert img.format == fmt
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary file left
    assert out.name in json.loads((tmp_path / ".contrastkit.json").read_text())["files"]  # listed as contrastkit's


def test_preview_refuses_an_unknown_extension_before_reading_data(tmp_path, capsys):
    out = tmp_path / "grid.gif"
    rc, _, err = _cli(["preview-augment", "--data", str(tmp_path / "missing"), "--out", str(out)], capsys)
    assert rc == 2 and "must end in .png, .jpg, .jpeg, .webp" in err and "grid.gif" in err
    assert not out.exists()
    from contrastkit.augment import SimCLRTransform, save_preview

    with pytest.raises(ValueError, match="must end in"):
        save_preview([Image.new("RGB", (8, 8))], SimCLRTransform(8), tmp_path / "grid.bmp")
    assert not (tmp_path / "grid.bmp").exists()


# item 10: --version, and help / argument errors without torch

_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from contrastkit.cli import main
codes = []
for argv in {argvs!r}:
    try:
        codes.append(main(argv))
    except SystemExit as exc:
        codes.append(exc.code)
print(json.dumps({{"codes": codes, "heavy": sorted(m for m in ("torch", "torchvision", "numpy") if m in sys.modules),
                  "seconds": time.perf_counter() - t0}}))
"""

HELP_AND_ERRORS = [["--help"], ["--version"], *([c, "--help"] for c in ("pretrain", "eval", "embed", "preview-augment",
                                                                        "demo", "experiment")),
                   ["eval"], ["pretrain", "--epochs", "two"], ["eval", "--checkpoint", "x", "--from-scratch"],
                   ["eval", "--checkpoint", "x", "--epochs", "3"], ["nope"]]


def test_help_version_and_argument_errors_import_no_torch_and_are_fast():
    code = _PROBE.format(argvs=HELP_AND_ERRORS)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    help_s = time.perf_counter() - t0
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["heavy"] == []  # not even numpy
    assert probe["codes"] == [0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, torchvision"], check=True, timeout=120)
    torch_s = time.perf_counter() - t0
    assert help_s < 0.5 * torch_s, (help_s, torch_s)  # measured together: a ratio, not a wall-clock bound


def test_version(capsys):
    import contrastkit

    rc, stdout, _ = _cli(["--version"], capsys)
    assert rc == 0 and stdout.strip() == f"contrastkit {contrastkit.__version__}"


def test_lazy_package_keeps_the_public_names():
    code = ("import sys, contrastkit; assert 'torch' not in sys.modules; "
            "from contrastkit import NTXentLoss, SupConLoss, build_model, create_encoder, list_encoders, "
            "ProjectionHead, ContrastiveModel, losses, distributed; "
            "assert NTXentLoss is losses.NTXentLoss and 'resnet18' in list_encoders(); "
            "assert set(contrastkit.__all__) <= set(dir(contrastkit)); "
            "import contrastkit as ck\ntry:\n    ck.nope\nexcept AttributeError as e:\n    print(e)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "has no attribute 'nope'" in done.stdout


# item 11: unreadable images name --skip-bad-files, which preview-augment and embed take

@pytest.fixture
def bad_folder(tmp_path):
    root = make_image_folder(tmp_path / "bad", per_class=4, size=16)
    bad = root / "test" / "class_1" / "000.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "train" / "class_2" / "001.png").write_bytes(b"not an image")
    return root, bad


def test_unreadable_image_error_names_the_option(bad_folder, tmp_path, capsys):
    root, _ = bad_folder
    rc, _, err = _cli(["preview-augment", "--data", str(root), "--out", str(tmp_path / "g.png"), "--images", "12"],
                      capsys)
    assert rc == 2 and "cannot read image file" in err and "--skip-bad-files" in err


def test_preview_augment_skips_bad_files(bad_folder, tmp_path):
    root, _ = bad_folder
    out = tmp_path / "g.png"
    assert main(["preview-augment", "--data", str(root), "--out", str(out), "--images", "12",
                 "--skip-bad-files"]) == 0
    assert out.is_file()


@pytest.mark.parametrize("workers", ["0", "1"])
@pytest.mark.parametrize("flag", [[], ["--skip-bad-files"]])
def test_embed_leaves_bad_files_out_and_lists_them(run, bad_folder, tmp_path, capsys, workers, flag):
    """embed never stops at an unreadable image (issue 19): it is left out, counted and listed; the option that
    pretrain and preview-augment need is accepted too."""
    from contrastkit.evaluate import load_embeddings

    root, bad = bad_folder
    args = ["embed", "--checkpoint", str(run[1]), "--data", str(root), "--out", str(tmp_path / "emb"),
            "--device", "cpu", "--num-workers", workers, "--no-progress", *flag]
    rc, stdout, err = _cli(args, capsys)
    assert rc == 0, err
    result = json.loads(stdout)
    other = root / "train" / "class_2" / "001.png"  # every image is embedded: 18, of which 2 unreadable
    assert result["count"] == 16 and result["bad_count"] == 2 and result["bad_files"] == [str(other), str(bad)]
    loaded = load_embeddings(tmp_path / "emb.npy")
    assert str(bad) not in loaded["paths"] and len(set(loaded["paths"])) == 16
    # each kept row is its own file: labels follow the paths' class folders
    assert [int(p.split("class_")[1][0]) for p in loaded["paths"]] == loaded["labels"].tolist()


# item 12 and issue 17: eval options that do not apply are refused; one epoch flag per protocol

@pytest.mark.parametrize("protocol, extra, flag", [
    ("knn", ["--from-scratch"], "--from-scratch"),
    ("linear", ["--label-fraction", "0.5"], "--label-fraction"),
    ("retrieval", ["--finetune-epochs", "2"], "--finetune-epochs"),
    ("finetune", ["--linear-epochs", "2"], "--linear-epochs"),
    ("finetune", ["--projection"], "--projection"),
])
def test_eval_refuses_options_of_another_protocol(tmp_path, capsys, protocol, extra, flag):
    rc, _, err = _cli(["eval", "--checkpoint", str(tmp_path / "nowhere.pt"), "--protocol", protocol, *extra], capsys)
    assert rc == 2 and f"{flag} applies to --protocol" in err and f"not {protocol}" in err
    assert "does not exist" not in err  # refused before the checkpoint is read
    from contrastkit.evaluate import evaluate_checkpoint

    kwargs = {"--from-scratch": {"from_scratch": True}, "--label-fraction": {"label_fraction": 0.5},
              "--finetune-epochs": {"finetune_epochs": 2}, "--linear-epochs": {"linear_epochs": 2},
              "--projection": {"projection": True}}[flag]
    with pytest.raises(ValueError, match=f"{flag} applies to --protocol"):
        evaluate_checkpoint(tmp_path / "nowhere.pt", protocol, **kwargs)


def test_eval_epoch_flags(tmp_path, capsys):
    rc, _, err = _cli(["eval", "--checkpoint", "x.pt", "--epochs", "3"], capsys)
    assert rc == 2 and "use --linear-epochs N" in err and "--finetune-epochs N" in err
    rc, _, err = _cli(["eval", "--checkpoint", "x.pt", "--protocol", "linear", "--linear-epochs", "0"], capsys)
    assert rc == 2 and "--linear-epochs must be an integer >= 1" in err
    rc, _, err = _cli(["eval", "--checkpoint", "x.pt", "--protocol", "finetune", "--label-fraction", "1.5"], capsys)
    assert rc == 2 and "--label-fraction must be in (0, 1], got 1.5" in err
    rc, _, err = _cli(["eval", "--checkpoint", str(tmp_path / "x.pt"), "--protocol", "all", "--from-scratch",
                       "--linear-epochs", "2", "--finetune-epochs", "1", "--label-fraction", "0.5"], capsys)
    assert rc == 2 and "does not exist" in err  # all takes every option: the checks pass, then the file is missing
