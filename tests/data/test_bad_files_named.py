"""Without --skip-bad-files, a failed start names every unreadable file of the data set (up to ten, then how many
more), not only the first one met (issue 31)."""
from __future__ import annotations

import re

import pytest

from conftest import TINY, make_image_folder
from contrastkit.cli import main
from contrastkit.data import load_dataset
from contrastkit.data import sources


def _break(folder, n: int) -> list[str]:
    """Make ``n`` of the folder's training images unreadable (garbage, a truncated PNG, an empty file, in turn);
    returns their paths in the order the data set lists them."""
    files = sorted((folder / "train").rglob("*.png"))[::2][:n]
    for i, path in enumerate(files):
        path.write_bytes([b"not an image", b"\x89PNG\r\n\x1a\n truncated", b""][i % 3])
    return [str(p) for p in files]


def _named(message: str) -> list[str]:
    return re.findall(r"'([^']+\.png)'", message)


def _data(folder):
    """The folder as pretraining loads it: an unreadable file ends the work, so its error names them all."""
    data = load_dataset(str(folder))
    data.train.name_all_bad_files = True
    return data


def test_every_unreadable_file_is_named(tmp_path):
    folder = make_image_folder(tmp_path / "data", per_class=8)
    bad = _break(folder, 3)
    data = _data(folder)
    with pytest.raises(ValueError) as info:
        data.train[data.train.paths.index(bad[1])]
    message = str(info.value)
    assert message.startswith(f"cannot read image file {bad[1]!r}")  # the one met first, with why
    assert "; 3 unreadable files: " in message and "\n" not in message
    assert sorted(set(_named(message))) == sorted(bad) and "more" not in message
    assert "--skip-bad-files" in message


def test_one_unreadable_file_is_named_once(tmp_path):
    folder = make_image_folder(tmp_path / "data", per_class=8)
    bad = _break(folder, 1)
    data = _data(folder)
    with pytest.raises(ValueError) as info:
        data.train[data.train.paths.index(bad[0])]
    assert set(_named(str(info.value))) == {bad[0]} and "1 unreadable file" not in str(info.value)


def test_many_unreadable_files_are_counted_past_ten(tmp_path):
    folder = make_image_folder(tmp_path / "data", per_class=10)
    bad = _break(folder, 13)
    data = _data(folder)
    with pytest.raises(ValueError) as info:
        data.train[data.train.paths.index(bad[0])]
    message = str(info.value)
    listed = message.split("unreadable files: ", 1)[1]
    assert "; 13 unreadable files: " in message and len(_named(listed)) == 10 and " and 3 more" in listed
    assert set(_named(listed)) <= set(bad)


def test_the_search_for_more_stops_at_its_time_limit(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "data", per_class=8)
    bad = _break(folder, 3)
    monkeypatch.setattr(sources, "BAD_FILES_SEARCH_S", 0.0)
    data = _data(folder)
    with pytest.raises(ValueError) as info:
        data.train[data.train.paths.index(bad[2])]
    message = str(info.value)
    n = len(data.train)
    assert f"among the first 0 of its {n} files (looked for 0 s): {bad[2]!r}" in message


def test_a_consumer_that_passes_over_bad_files_gets_one_name_each(tmp_path):
    """embed and index skip unreadable files one by one: each error names its own file, with no search."""
    folder = make_image_folder(tmp_path / "data", per_class=8)
    bad = _break(folder, 3)
    data = load_dataset(str(folder))
    for path in bad:
        with pytest.raises(ValueError) as info:
            data.train[data.train.paths.index(path)]
        assert set(_named(str(info.value))) == {path}


@pytest.mark.parametrize("augment_on, workers", [("device", "0"), ("workers", "0"), ("device", "1")])
def test_pretrain_names_every_unreadable_file(tmp_path, capsys, augment_on, workers):
    """Both ways of making views, and a DataLoader worker's error: one line naming the three files."""
    folder = make_image_folder(tmp_path / "data", per_class=8)
    bad = _break(folder, 3)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(folder), "--epochs", "1", "--out", str(out), *TINY, "--size", "16",
                 "--preset", "cifar", "--knn-every", "0", "--device", "cpu", "--augment-on", augment_on,
                 "--num-workers", workers]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("contrastkit pretrain: error: cannot read image file") and "\n" not in err
    assert "3 unreadable files: " in err and sorted(set(_named(err))) == sorted(bad)
    assert not out.exists()
