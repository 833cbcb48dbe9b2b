"""Pictures of search results: ``neighbours.png`` (a grid), ``gallery.html`` and ``duplicates.html``
(self-contained pages).

In the search views each row is a query followed by its neighbours, with the cosine similarity under
each neighbour; in the near-duplicates view each row is a group, side by side, with each image's
score with the group's first (or "identical pixels"). The HTML pages embed every thumbnail as a
``data:`` URI, so they need no server, no other file and no network: they open in any browser, and
can be mailed or archived alone.
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from PIL import Image, ImageDraw

from ..data.sources import open_rgb

if TYPE_CHECKING:
    from .dedup import NearDuplicates

__all__ = ["write_neighbours_png", "write_gallery_html", "write_search_outputs", "write_duplicates_html",
           "MAX_PNG_ROWS"]

#: Rows drawn in neighbours.png (the HTML page holds every query).
MAX_PNG_ROWS = 32
_CAPTION = 14


def _thumbnail(path: str, side: int) -> Image.Image:
    """The image scaled to fit a ``side`` square (nearest-neighbour for small images, so pixels stay crisp);
    a grey tile marked "unreadable" when the file cannot be read any more."""
    try:
        img = open_rgb(path)
    except ValueError:
        tile = Image.new("RGB", (side, side), (200, 200, 200))
        ImageDraw.Draw(tile).text((4, side // 2 - 6), "unreadable", fill=(90, 0, 0))
        return tile
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.NEAREST if scale >= 2 else Image.BICUBIC)


def _check_results(results: Sequence[dict[str, Any]]) -> None:
    if not results:
        raise ValueError("there are no search results to draw")
    for r in results:
        if not isinstance(r, dict) or "query" not in r or "neighbours" not in r:
            raise ValueError(f"each result must be a dict with 'query' and 'neighbours', got {r!r:.80}")


def write_neighbours_png(results: Sequence[dict[str, Any]], out_file: str | os.PathLike, side: int = 64,
                         max_rows: int = MAX_PNG_ROWS) -> Path:
    """A grid: one row per query (the first ``max_rows``), the query then its neighbours, similarity under each.

    The query's column is set off by a gap. Written atomically (a temporary file, then a rename).
    """
    _check_results(results)
    rows = list(results)[:max_rows]
    k = max(len(r["neighbours"]) for r in rows)
    gap, cell_h = side // 4, side + _CAPTION
    canvas = Image.new("RGB", ((k + 1) * side + gap, len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for y, r in enumerate(rows):
        top = y * cell_h
        canvas.paste(_thumbnail(r["query"], side), (0, top))
        draw.text((2, top + side + 1), "query", fill=(0, 0, 160))
        for x, nb in enumerate(r["neighbours"]):
            left = gap + (x + 1) * side
            canvas.paste(_thumbnail(nb["path"], side), (left, top))
            draw.text((left + 2, top + side + 1), f"{nb['similarity']:.3f}", fill=(0, 0, 0))
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    canvas.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, out)
    return out


def _data_uri(path: str, side: int, cache: dict[str, str]) -> str:
    if path not in cache:
        buffer = io.BytesIO()
        _thumbnail(path, side).save(buffer, format="PNG", optimize=True)
        cache[path] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return cache[path]


_STYLE = """body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}
td{padding:4px;vertical-align:top;text-align:center;font-size:12px}
td.query{border-right:3px solid #338;background:#eef}img{width:%dpx;height:%dpx;object-fit:contain;
image-rendering:pixelated}figure{margin:0}figcaption{max-width:%dpx;overflow-wrap:anywhere}"""


def _figure(path: str, caption: str, side: int, cache: dict[str, str]) -> str:
    name = html.escape(Path(path).name)
    return (f'<figure><img src="{_data_uri(path, side, cache)}" alt="{name}" title="{html.escape(path)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _write_page(out_file: str | os.PathLike, title: str, intro: str, rows: list[str], side: int) -> Path:
    """A self-contained HTML page holding a table of ``rows``; written atomically (a temporary file, a rename)."""
    lines = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_STYLE % (side, side, side + 20)}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>", "<table>", *rows,
             "</table>", "</body></html>", ""]
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, out)
    return out


def write_gallery_html(results: Sequence[dict[str, Any]], out_file: str | os.PathLike, side: int = 96,
                       title: str = "contrastkit search") -> Path:
    """A self-contained HTML page: a table with one ``<tr class="query-row">`` per query.

    Written atomically (a temporary file, then a rename).
    """
    _check_results(results)
    cache: dict[str, str] = {}
    rows = []
    for r in results:
        cells = [f'<td class="query">{_figure(r["query"], "query: " + Path(r["query"]).name, side, cache)}</td>']
        cells += [f'<td class="neighbour">{_figure(nb["path"], format(nb["similarity"], ".3f"), side, cache)}</td>'
                  for nb in r["neighbours"]]
        rows.append('<tr class="query-row">' + "".join(cells) + "</tr>")
    intro = f"{len(results)} queries; each row: the query, then its nearest images with their cosine similarity."
    return _write_page(out_file, title, intro, rows, side)


def write_duplicates_html(result: "NearDuplicates", out_file: str | os.PathLike, side: int = 96,
                          title: str = "contrastkit near-duplicates") -> Path:
    """A self-contained HTML page: one ``<tr class="group-row">`` per group of near-duplicates, its images side
    by side, each after the first captioned with its score with the first ("identical pixels" for an exact
    copy). The threshold (and its calibration) heads the page. Written atomically."""
    cache: dict[str, str] = {}
    rows = []
    for g in result.groups:
        cells = [f'<td class="query">{_figure(g.paths[0], Path(g.paths[0]).name, side, cache)}</td>']
        cells += [f'<td class="member">{_figure(p, "identical pixels" if same else f"score {s:.3f}", side, cache)}'
                  f"</td>" for p, s, same in zip(g.paths[1:], g.scores[1:], g.identical[1:])]
        rows.append('<tr class="group-row">' + "".join(cells) + "</tr>")
    how = result.calibration.summary() if result.calibration is not None else "threshold given"
    intro = (f"{len(result.groups)} groups at score >= {result.threshold:.4f} ({how}). Each row: a group's first "
             f"image, then the others with their score with it.")
    return _write_page(out_file, title, intro, rows, side)


def write_search_outputs(results: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> dict[str, str]:
    """``out_dir/neighbours.png`` and ``out_dir/gallery.html``; returns their paths."""
    folder = Path(os.path.expanduser(os.fspath(out_dir)))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {os.fspath(out_dir)!r} is a file; expected a folder for neighbours.png and "
                         f"gallery.html")
    png = write_neighbours_png(results, folder / "neighbours.png")
    page = write_gallery_html(results, folder / "gallery.html")
    return {"png": str(png), "html": str(page)}
