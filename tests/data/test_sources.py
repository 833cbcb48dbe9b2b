import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image_folder
from contrastkit.data import ViewDataset, decode_to_array, load_dataset, seed_for
from contrastkit.data.sources import open_rgb


def test_digits_is_offline_32px_rgb():
    d = load_dataset("digits")
    img, label = d.train[0]
    assert img.size == (32, 32) and img.mode == "RGB" and 0 <= label < 10
    assert len(d.train) + len(d.test) == 1797 and d.num_classes == 10


def test_folder_with_train_test(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=6)
    d = load_dataset(str(root))
    assert d.classes == ["class_0", "class_1", "class_2"]
    assert len(d.train) == 18 and len(d.test) == 6
    assert sorted(set(d.train.targets)) == [0, 1, 2]


def test_single_folder_split_is_deterministic_and_stratified(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=10, split=False)
    a, b = load_dataset(str(root), seed=3), load_dataset(str(root), seed=3)
    assert a.train.paths == b.train.paths and a.test.paths == b.test.paths
    assert not set(a.train.paths) & set(a.test.paths)
    assert sorted(a.test.targets) == [0, 0, 1, 1, 2, 2]
    c = load_dataset(str(root), seed=4)
    assert c.test.paths != a.test.paths


def test_unlabelled_folder(tmp_path):
    for i in range(5):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{i}.jpg")
    d = load_dataset(str(tmp_path))
    assert len(d.train) == 5 and d.test is None and set(d.train.targets) == {-1}


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="neither a known data set"):
        load_dataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        load_dataset(str(tmp_path / "empty"))
    root = make_image_folder(tmp_path / "d", per_class=3, split=False)
    (root / "class_9").mkdir()
    with pytest.raises(ValueError, match="class_9 holds no image files"):
        load_dataset(str(root))


def test_corrupt_file_named_or_skipped(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=3, split=False)
    bad = root / "class_0" / "000.png"
    bad.write_bytes(b"garbage")
    d = load_dataset(str(root), val_fraction=0.34)
    idx = d.train.paths.index(str(bad)) if str(bad) in d.train.paths else None
    ds = d.train if idx is not None else d.test
    idx = ds.paths.index(str(bad))
    with pytest.raises(ValueError, match="000.png"):
        ds[idx]
    d2 = load_dataset(str(root), val_fraction=0.34, skip_bad_files=True)
    ds2 = d2.train if str(bad) in d2.train.paths else d2.test
    img, _ = ds2[ds2.paths.index(str(bad))]
    assert img.mode == "RGB" and ds2.bad_files == [str(bad)]


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P", "CMYK"])
def test_open_rgb_converts_modes(tmp_path, mode):
    arr = np.arange(64, dtype=np.uint16 if mode == "I;16" else np.uint8).reshape(8, 8)
    if mode == "I;16":
        img = Image.fromarray((arr * 1000).astype(np.uint16))
        assert img.mode == "I;16"
    elif mode == "RGBA":
        img = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    else:
        img = Image.fromarray(arr.astype(np.uint8), mode="L").convert(mode)
    path = tmp_path / ("x.png" if mode != "CMYK" else "x.jpg")
    img.save(path)
    out = open_rgb(path)
    assert out.mode == "RGB" and out.size == (8, 8)
    if mode == "I;16":  # scaled from 16 bits, not clipped at 255
        a = np.asarray(out)[..., 0]
        assert a.max() == round(63000 / 65535 * 255) and a.min() == 0
    if mode == "RGBA":  # fully transparent -> white background
        assert np.asarray(out).min() == 255


def test_view_dataset_seeded_per_sample_and_epoch():
    from contrastkit.augment import MultiViewTransform, SimCLRTransform

    d = load_dataset("digits")
    t = MultiViewTransform(SimCLRTransform.from_preset("cifar"), n_views=2)
    ds = ViewDataset(d.train, t, seed=1)
    v1, _, _ = ds[5]
    torch.rand(10)  # global RNG use does not matter
    v2, _, _ = ds[5]
    assert v1.shape == (2, 3, 32, 32) and torch.equal(v1, v2)
    state = torch.get_rng_state()
    ds[7]
    assert torch.equal(torch.get_rng_state(), state)  # in the main process the global RNG is left as it was
    torch.manual_seed(seed_for(1, 0, 5))  # the views are those of the documented seeding, torch.manual_seed(s)
    assert torch.equal(torch.stack(t(d.train[5][0])), v1)
    ds.set_epoch(1)
    assert not torch.equal(ds[5][0], v1)
    assert seed_for(1, 0, 5) != seed_for(1, 0, 6)


def test_decode_to_array_shapes_and_cache(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=3, size=20)
    d = load_dataset(str(root))
    x, y = decode_to_array(d.train, 16, cache_key=str(root), cache_dir=str(tmp_path / "cache"))
    assert x.shape == (9, 3, 16, 16) and x.dtype == torch.uint8 and y.tolist() == d.train.targets
    x2, _ = decode_to_array(d.train, 16, cache_key=str(root), cache_dir=str(tmp_path / "cache"))
    assert torch.equal(x, x2) and len(list((tmp_path / "cache").iterdir())) == 1


def test_decode_to_array_concurrent_writers_share_one_cache(tmp_path, monkeypatch):
    """Parallel experiments decode the same data at once; each writer must not rename the other's temporary file."""
    import threading

    from contrastkit.data import views

    root = make_image_folder(tmp_path / "d", per_class=3, size=20)
    d = load_dataset(str(root))
    barrier = threading.Barrier(3)
    real_savez = np.savez

    def savez_in_step(*args, **kwargs):  # all writers reach the write before any renames
        real_savez(*args, **kwargs)
        barrier.wait(timeout=30)

    monkeypatch.setattr(views.np, "savez", savez_in_step)
    results, errors = [], []

    def work():
        try:
            results.append(decode_to_array(d.train, 16, cache_key=str(root), cache_dir=str(tmp_path / "cache")))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(torch.equal(r[0], results[0][0]) for r in results)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [next((tmp_path / "cache").iterdir()).name]
    assert not any(".tmp" in p.name for p in (tmp_path / "cache").iterdir())


def test_decode_to_array_with_a_full_disk_warns_and_still_returns_the_images(tmp_path, monkeypatch):
    """The cache is a convenience: a full disk costs the next run a decode, never this run."""
    from contrastkit.data import views

    root = make_image_folder(tmp_path / "d", per_class=3, size=20)
    d = load_dataset(str(root))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(views.np, "savez", full)
    with pytest.warns(UserWarning, match="could not cache the decoded images .* No space left on device"):
        x, y = decode_to_array(d.train, 16, cache_key=str(root), cache_dir=str(tmp_path / "cache"))
    assert x.shape == (9, 3, 16, 16) and y.tolist() == d.train.targets
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left behind
