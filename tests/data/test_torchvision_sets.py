"""``--data cifar10`` / ``cifar100`` through torchvision's own classes: read from ``--data-root`` in torchvision's
format, downloaded by torchvision when absent, never downloaded over a folder that is there but damaged."""
from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torchvision.datasets.cifar as tv_cifar

from contrastkit.cli import main
from contrastkit.data import load_dataset
from torchvision_files import cifar_images, write_cifar


def _no_download(*args, **kwargs):
    raise AssertionError("a download was attempted")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_a_torchvision_set_is_read_from_the_data_root(tmp_path, monkeypatch, name):
    write_cifar(tmp_path, monkeypatch, name, train_per_class=2, test_per_class=1, classes=10)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", _no_download)
    data = load_dataset(name, root=str(tmp_path))
    assert (len(data.train), len(data.test)) == (20, 10) and data.classes == [f"class{c}" for c in range(10)]
    assert data.image_size == 32 and data.uniform_size
    image, label = data.train[0]
    assert image.mode == "RGB" and image.size == (32, 32) and label == 0
    expected = cifar_images([0], seed=1)[0].reshape(3, 32, 32).transpose(1, 2, 0)  # the first training row, HWC
    assert np.array_equal(np.asarray(image), expected)
    assert sorted(set(data.test.targets)) == list(range(10))


def test_a_missing_set_is_downloaded_by_torchvision(tmp_path, monkeypatch):
    """Absent: torchvision's download=True is asked (here a stand-in writes the files where it would)."""
    calls = []

    def download(url, root, filename=None, md5=None):
        calls.append((url, root))
        write_cifar(tmp_path, monkeypatch, "cifar10")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", download)
    write_cifar(tmp_path / "elsewhere", monkeypatch, "cifar10")  # the checksums torchvision will expect
    data = load_dataset("cifar10", root=str(tmp_path))
    assert calls == [(tv_cifar.CIFAR10.url, str(tmp_path))] and len(data.train) == 20


def test_offline_the_error_says_what_to_put_where(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError) as info:
        load_dataset("cifar10", root=str(tmp_path / "root"))
    message = str(info.value)
    assert message.startswith(f"cifar10 is not in {tmp_path / 'root'} and could not be downloaded (URLError")
    assert "put cifar-10-batches-py/ (the python version of CIFAR-10) inside" in message and "shared" not in message


def test_a_damaged_set_is_never_downloaded_over(tmp_path, monkeypatch):
    folder = write_cifar(tmp_path, monkeypatch, "cifar10")
    (folder / "data_batch_3").write_bytes(b"changed")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", _no_download)
    with pytest.raises(RuntimeError, match=f"{folder} is there but fails torchvision's checks .*Move it aside"):
        load_dataset("cifar10", root=str(tmp_path))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_pretrain_and_eval_on_cifar10_from_the_data_root(tmp_path, monkeypatch, capsys):
    write_cifar(tmp_path / "datasets", monkeypatch, "cifar10", train_per_class=2)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", _no_download)
    out = tmp_path / "run"
    root = ["--data-root", str(tmp_path / "datasets")]
    assert main(["pretrain", "--data", "cifar10", *root, "--epochs", "1", "--out", str(out), "--width", "0.125",
                 "--num-workers", "0", "--no-progress", "--knn-every", "0", "--device", "cpu"]) == 0
    assert "--batch-size 16: the default, 256, is larger than the training set (20 images)" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(out), *root, "--protocol", "knn", "--device", "cpu",
                 "--num-workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["data"] == "cifar10" and 0.0 <= result["metrics"]["top1"] <= 1.0
