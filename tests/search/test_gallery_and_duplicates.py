"""`search --out` pictures and `search --near-duplicates` (issue 19 items 3 and 4)."""
from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from contrastkit.cli import main
from contrastkit.search import build_index, near_duplicate_groups

_CPU = ["--device", "cpu", "--num-workers", "0", "--no-progress"]


class _Page(HTMLParser):
    """Collects the query rows, the image sources and every attribute that could load something."""

    def __init__(self) -> None:
        super().__init__()
        self.rows, self.images_per_row, self.sources, self.links = 0, [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "query-row" in (attrs.get("class") or ""):
            self.rows += 1
            self.images_per_row.append(0)
        if tag == "img":
            self.sources.append(attrs["src"])
            self.images_per_row[-1] += 1
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])
        if tag in ("link", "script"):
            self.links.append(tag)


def _resolve(src: str, page: Path) -> Image.Image:
    """The image a src refers to: a data: URI decoded, or a relative path that must exist."""
    if src.startswith("data:image/"):
        return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert "://" not in src and not src.startswith("/"), src
    target = page.parent / src
    assert target.is_file(), src
    return Image.open(target)


def test_out_writes_png_and_a_self_contained_gallery(checkpoint, flat_folder, tmp_path, capsys):
    assert main(["index", "--checkpoint", str(checkpoint), "--images", str(flat_folder), "--out",
                 str(tmp_path / "idx"), *_CPU]) == 0
    queries = tmp_path / "q"
    queries.mkdir()
    for i in (1, 3, 7):
        shutil.copy(flat_folder / f"img_{i:03d}.png", queries / f"q{i}.png")
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--query", str(queries), "--k", "4", "--json",
                 "--out", str(tmp_path / "res"), "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert len(json.loads(out.out)["results"]) == 3 and "gallery.html" in out.err
    page = tmp_path / "res" / "gallery.html"
    parser = _Page()
    parser.feed(page.read_text())
    assert parser.rows == 3 and parser.images_per_row == [5, 5, 5]  # the query and its 4 neighbours
    assert parser.links == []  # no stylesheet, script or link to fetch
    for src in parser.sources:
        assert _resolve(src, page).size[0] > 0
    png = Image.open(tmp_path / "res" / "neighbours.png")
    assert png.format == "PNG" and png.height == 3 * (64 + 14) and png.width == 5 * 64 + 16


def test_near_duplicates_groups_planted_copies(checkpoint, flat_folder, tmp_path, capsys):
    Image.open(flat_folder / "img_002.png").save(flat_folder / "img_002_copy.jpg", quality=95)
    shutil.copy(flat_folder / "img_005.png", flat_folder / "img_005_same.png")
    build_index(checkpoint, flat_folder, tmp_path / "idx", device="cpu", num_workers=0, progress=False)
    # a score is at most 2, so 2.5 groups exact copies only
    assert main(["search", "--index", str(tmp_path / "idx"), "--near-duplicates", "2.5", "--json"]) == 0
    line = capsys.readouterr().out
    groups = json.loads(line)["groups"]
    assert list(json.loads(line)) == ["threshold", "groups", "scores", "identical"]
    assert groups == [[str(flat_folder / "img_005.png"), str(flat_folder / "img_005_same.png")]]
    for g in groups:
        assert len(g) >= 2 and all(Path(p).is_file() for p in g)


def test_groups_are_connected_components_and_blocks_do_not_matter():
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(40, 32, generator=g), dim=1)
    a, b = base[3], base[9]
    mid = torch.nn.functional.normalize(a + b, dim=0)  # a chain: a ~ mid ~ b, while a and b are far apart
    x = torch.cat([base, torch.stack([base[3] * 1.0, mid, base[20]])])  # rows 40 (= 3), 41 (mid), 42 (= 20)
    threshold = float(mid @ a) - 1e-4
    groups = near_duplicate_groups(x, threshold)
    assert [3, 9, 40, 41] in groups and [20, 42] in groups
    assert near_duplicate_groups(x, threshold, block_elements=43 * 2) == groups  # 2 rows a block
    assert all(len(gr) > 1 for gr in groups)


@pytest.mark.parametrize("threshold, match", [(1.5, r"in \[-1, 1\], got 1.5"), (-0.99, "use a higher threshold")])
def test_near_duplicate_threshold_errors(threshold, match):
    x = torch.nn.functional.normalize(torch.ones(200, 4) + 0.01 * torch.randn(200, 4), dim=1)  # 19,900 pairs
    with pytest.raises(ValueError, match=match):
        near_duplicate_groups(x, threshold)


def test_near_duplicates_cli_errors(checkpoint, flat_folder, tmp_path, capsys):
    build_index(checkpoint, flat_folder, tmp_path / "idx", device="cpu", num_workers=0, progress=False)
    with pytest.raises(SystemExit):  # argparse: --query and --near-duplicates exclude each other
        main(["search", "--index", str(tmp_path / "idx"), "--near-duplicates", "0.9", "--query", "x.png"])
