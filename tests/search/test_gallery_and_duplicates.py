"""`search --out` pictures and `search --near-duplicates` (issue 19 items 3 and 4)."""
from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import urllib.parse

import numpy as np
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
        self.anchors, self.captions, self._caption = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "query-row" in (attrs.get("class") or ""):
            self.rows += 1
            self.images_per_row.append(0)
        if tag == "img":
            self.sources.append(attrs["src"])
            self.images_per_row[-1] += 1
        if tag == "a":
            self.anchors.append(attrs["href"])
        for key in ("href", "src"):
            if key in attrs and tag not in ("img", "a"):
                self.links.append(attrs[key])
        if tag in ("link", "script"):
            self.links.append(tag)
        if tag == "figcaption":
            self._caption = ""

    def handle_data(self, data):
        if self._caption is not None:
            self._caption += data + "|"

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self.captions.append(self._caption)
            self._caption = None


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
    assert parser.links == []  # no stylesheet, script or other link to fetch
    for src in parser.sources:
        assert _resolve(src, page).size[0] > 0
    # each picture and each name links to its image (issue 31 item 8): twice per figure, to a file that exists
    assert len(parser.anchors) == 2 * 15
    linked = [Path(urllib.parse.unquote(urllib.parse.urlparse(a).path)) for a in parser.anchors]
    assert all(a.startswith("file:///") for a in parser.anchors) and all(p.is_file() for p in linked)
    # the names are visible, not only in titles: each caption starts with its file's name, then its similarity
    results = json.loads(out.out)["results"]
    shown = [p for r in results for p in [r["query"]] + [n["path"] for n in r["neighbours"]]]
    assert [c.split("|")[0] for c in parser.captions] == [Path(p).name for p in shown]
    assert linked[::2] == [Path(p) for p in shown]
    for r in results:  # each query is a copy of an indexed image: left out of its own neighbours, and said so
        original = str(flat_folder / f"img_{Path(r['query']).stem[1:]:0>3}.png")
        assert r["left_out"] == [original] and original not in [n["path"] for n in r["neighbours"]]
    assert page.read_text().count("not shown as its own neighbour") == 3
    png = Image.open(tmp_path / "res" / "neighbours.png").convert("L")
    assert png.height == 3 * (64 + 26) and png.width == 5 * 64 + 16
    for row in range(3):  # under each tile, two lines of text: its name, then "query" or its similarity
        for left in [0] + [16 + 64 * (x + 1) for x in range(4)]:
            for line in range(2):
                top = row * 90 + 64 + 1 + 12 * line
                band = np.asarray(png.crop((left, top, left + 64, top + 12)))
                assert (band < 128).sum() > 10, (row, left, line)


def test_near_duplicates_groups_planted_copies(checkpoint, flat_folder, tmp_path, capsys):
    Image.open(flat_folder / "img_002.png").save(flat_folder / "img_002_copy.jpg", quality=95)
    shutil.copy(flat_folder / "img_005.png", flat_folder / "img_005_same.png")
    build_index(checkpoint, flat_folder, tmp_path / "idx", device="cpu", num_workers=0, progress=False)
    # a score is at most 2, so 2.5 groups exact copies only
    assert main(["search", "--index", str(tmp_path / "idx"), "--near-duplicates", "2.5", "--json"]) == 0
    line = capsys.readouterr().out
    groups = json.loads(line)["groups"]
    assert list(json.loads(line)) == ["threshold", "groups", "scores", "similarities", "identical"]
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


def test_relative_gallery_links_resolve_from_the_page(checkpoint, flat_folder, tmp_path):
    """With --relative-paths the links are relative to the page's folder: no absolute path, and each opens the
    image as long as the page keeps its place beside the images."""
    assert main(["index", "--checkpoint", str(checkpoint), "--images", str(flat_folder), "--out",
                 str(tmp_path / "idx"), *_CPU]) == 0
    assert main(["search", "--index", str(tmp_path / "idx"), "--query", str(flat_folder / "img_002.png"), "--k", "3",
                 "--out", str(tmp_path / "pics"), "--relative-paths", "--device", "cpu"]) == 0
    page = tmp_path / "pics" / "gallery.html"
    parser = _Page()
    parser.feed(page.read_text())
    assert str(tmp_path) not in page.read_text() and len(parser.anchors) == 2 * 4
    for href in parser.anchors:
        assert not href.startswith(("/", "file:")) and (page.parent / urllib.parse.unquote(href)).resolve().is_file()
    assert "img_002.png|query|in the index: not shown as its own neighbour (1 left out)|" in parser.captions


def test_near_duplicates_text_shows_each_members_score_and_similarity(checkpoint, flat_folder, tmp_path, capsys):
    shutil.copy(flat_folder / "img_005.png", flat_folder / "img_005_same.png")
    build_index(checkpoint, flat_folder, tmp_path / "idx", device="cpu", num_workers=0, progress=False)
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--near-duplicates", "2.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1 groups of near-duplicates (score >= 2.5000; 1 of them exact copies only)")
    at = lines.index(f"  {flat_folder / 'img_005.png'}")
    assert lines[at + 1].startswith(f"    {flat_folder / 'img_005_same.png'}  (identical pixels, score ")
    assert lines[at + 1].endswith(", similarity 1.0000)")
