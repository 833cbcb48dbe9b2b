"""Pictures of search results: ``neighbours.png`` (a grid), ``gallery.html`` and ``duplicates.html``
(self-contained pages).

In the search views each row is a query followed by its neighbours; every tile is labelled with its file
name and, for a neighbour, its cosine similarity. In the near-duplicates view each row is a group, side by
side, each image after the first with its score and cosine similarity with the first ("identical pixels" for
an exact copy). The HTML pages embed every thumbnail as a ``data:`` URI, so they need no server, no other file
and no network to show: they open in any browser, and can be mailed or archived alone. Each picture and name
links to its image (a ``file:`` URI; with relative names, a path relative to the page). A result entry may carry
``shown``, the name to show in place of its path (``relative_paths``: paths relative to the indexed folder and
the query folder, so a shared page holds no absolute path). Names are HTML-escaped.

:func:`write_search_outputs` writes both search pictures as one output of the ``--out`` folder, and
:func:`write_duplicates_html` the near-duplicates page as another
(:class:`~contrastkit.runtime.ownership.OutputFiles`): an earlier search's pictures are replaced only
with ``overwrite``, files contrastkit did not write never; :func:`search_output` and
:func:`duplicates_output` check that before the search runs.
"""
from __future__ import annotations

import base64
import html
import io
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..data.sources import open_rgb
from ..runtime.ownership import OutputFiles
from ..runtime.text import printable

if TYPE_CHECKING:
    from .dedup import NearDuplicates

__all__ = ["write_neighbours_png", "write_gallery_html", "write_search_outputs", "search_output",
           "relative_paths", "write_duplicates_html", "duplicates_output", "MAX_PNG_ROWS"]

#: Rows drawn in neighbours.png (the HTML page holds every query).
MAX_PNG_ROWS = 32
_LINE = 12  # pixels per caption line in neighbours.png (two lines: the name, the similarity)


def _thumbnail(path: str, side: int) -> Image.Image:
    """The image scaled to fit a ``side`` square (nearest-neighbour for small images, so pixels stay crisp);
    a grey tile marked "unreadable" when the file cannot be read any more."""
    try:
        img = open_rgb(path, side)
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


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """``text``, or its end after ``..`` when it is wider than ``width`` pixels (the end of a file name, its number
    and extension, is what tells it from its neighbours)."""
    text = printable(text)
    if draw.textlength(text, font=font) <= width:
        return text
    for start in range(1, len(text)):
        cut = ".." + text[start:]
        if draw.textlength(cut, font=font) <= width:
            return cut
    return ".."


def _neighbours_png(results: Sequence[dict[str, Any]], side: int, max_rows: int) -> Image.Image:
    """The grid of :func:`write_neighbours_png`."""
    _check_results(results)
    rows = list(results)[:max_rows]
    k = max(len(r["neighbours"]) for r in rows)
    gap, cell_h = side // 4, side + 2 * _LINE + 2
    canvas = Image.new("RGB", ((k + 1) * side + gap, len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for y, r in enumerate(rows):
        top = y * cell_h
        canvas.paste(_thumbnail(r["query"], side), (0, top))
        draw.text((2, top + side + 1), _fit(draw, Path(r.get("shown", r["query"])).name, side - 4, font),
                  fill=(0, 0, 160), font=font)
        draw.text((2, top + side + 1 + _LINE), "query", fill=(0, 0, 160), font=font)
        for x, nb in enumerate(r["neighbours"]):
            left = gap + (x + 1) * side
            canvas.paste(_thumbnail(nb["path"], side), (left, top))
            draw.text((left + 2, top + side + 1), _fit(draw, Path(nb.get("shown", nb["path"])).name, side - 4, font),
                      fill=(0, 0, 0), font=font)
            draw.text((left + 2, top + side + 1 + _LINE), f"{nb['similarity']:.3f}", fill=(0, 0, 0), font=font)
    return canvas


def write_neighbours_png(results: Sequence[dict[str, Any]], out_file: str | os.PathLike, side: int = 64,
                         max_rows: int = MAX_PNG_ROWS) -> Path:
    """A grid: one row per query (the first ``max_rows``), the query then its neighbours, each tile labelled
    with its file name (its end, when too long) and, for a neighbour, its similarity.

    The query's column is set off by a gap. Written atomically (a temporary file, then a rename).
    """
    canvas = _neighbours_png(results, side, max_rows)
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
image-rendering:pixelated}figure{margin:0}figcaption{max-width:%dpx;overflow-wrap:anywhere}
figcaption a{color:#114;text-decoration:none}figcaption a:hover{text-decoration:underline}"""


def _href(path: str, shown: str | None, page_dir: Path) -> str:
    """The link to an image: a ``file:`` URI of its absolute path, or, for a page of relative names (``shown``), its
    path relative to the page's folder (no absolute path on the page)."""
    if shown is None:
        return Path(path).as_uri()
    return urllib.parse.quote(os.path.relpath(path, page_dir).replace(os.sep, "/"))


def _figure(path: str, shown: str | None, lines: Sequence[str], side: int, cache: dict[str, str],
            page_dir: Path) -> str:
    """A thumbnail linked to its image, captioned with its file name (linked too) and ``lines``."""
    label = shown if shown is not None else path
    name, full = html.escape(printable(Path(label).name)), html.escape(printable(label))
    href = html.escape(_href(path, shown, page_dir))
    rest = "".join(f"<br>{html.escape(printable(line))}" for line in lines)
    return (f'<figure><a href="{href}"><img src="{_data_uri(path, side, cache)}" alt="{name}" title="{full}"></a>'
            f'<figcaption><a href="{href}" title="{full}">{name}</a>{rest}</figcaption></figure>')


def _page(title: str, intro: str, rows: list[str], side: int) -> str:
    """A self-contained HTML page holding a table of ``rows``."""
    return "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{html.escape(title)}</title><style>{_STYLE % (side, side, side + 20)}</style>"
                      f"</head><body>", f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>", "<table>",
                      *rows, "</table>", "</body></html>", ""])


def _gallery_html(results: Sequence[dict[str, Any]], side: int, title: str, page_dir: Path) -> str:
    """The page of :func:`write_gallery_html`."""
    _check_results(results)
    cache: dict[str, str] = {}
    lines = []
    for r in results:
        note = ["query"]
        if r.get("left_out"):
            note.append(f"in the index: not shown as its own neighbour ({len(r['left_out'])} left out)")
        cells = [f'<td class="query">{_figure(r["query"], r.get("shown"), note, side, cache, page_dir)}</td>']
        cells += [f'<td class="neighbour">'
                  f'{_figure(nb["path"], nb.get("shown"), [format(nb["similarity"], ".3f")], side, cache, page_dir)}'
                  f'</td>' for nb in r["neighbours"]]
        lines.append('<tr class="query-row">' + "".join(cells) + "</tr>")
    intro = (f"{len(results)} queries; each row: the query, then its nearest images with their cosine similarity. "
             f"A query that is itself in the index (the same file or the same pixels) is left out of its own "
             f"neighbours. Click a picture or a name to open the image.")
    return _page(title, intro, lines, side)


def write_gallery_html(results: Sequence[dict[str, Any]], out_file: str | os.PathLike, side: int = 96,
                       title: str = "contrastkit search") -> Path:
    """A self-contained HTML page: a table with one ``<tr class="query-row">`` per query.

    Written atomically (a temporary file, then a rename).
    """
    out = Path(out_file)
    text = _gallery_html(results, side, title, out.parent.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out


def search_output(out_dir: str | os.PathLike, overwrite: bool = False) -> OutputFiles:
    """``neighbours.png`` and ``gallery.html`` in ``out_dir`` as one output; entering it checks (before the
    search) that the folder is writable and that the files are new, or an earlier search's with ``overwrite``.

    Raises:
        ValueError: on entry: ``out_dir`` is a file or not writable, the files are in the way, or another search
            is writing them.
    """
    folder = Path(os.path.expanduser(os.fspath(out_dir)))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {os.fspath(out_dir)!r} is a file; expected a folder for neighbours.png and "
                         f"gallery.html")
    return OutputFiles(folder, ["gallery.html", "neighbours.png"], "search", "search", overwrite)


def relative_paths(results: Sequence[dict[str, Any]], images_root: str | os.PathLike,
                   query_root: str | os.PathLike) -> list[dict[str, Any]]:
    """The results with ``shown`` names: each neighbour's path relative to ``images_root`` (the indexed folder),
    each query's relative to ``query_root`` (its folder, or the query file's own folder)."""

    def rel(path: str, root) -> str:
        return os.path.relpath(path, root)
    return [{**r, "shown": rel(r["query"], query_root),
             "neighbours": [{**nb, "shown": rel(nb["path"], images_root)} for nb in r["neighbours"]],
             "left_out": [rel(p, images_root) for p in r.get("left_out", [])]}
            for r in results]


def write_search_outputs(results: Sequence[dict[str, Any]], out_dir: str | os.PathLike,
                         overwrite: bool = False, files: OutputFiles | None = None) -> dict[str, str]:
    """``out_dir/neighbours.png`` and ``out_dir/gallery.html`` (:func:`search_output`; or into ``files``, an
    output already entered); returns their paths."""
    _check_results(results)
    if files is None:
        with search_output(out_dir, overwrite) as entered:
            return write_search_outputs(results, out_dir, files=entered)
    _neighbours_png(results, 64, MAX_PNG_ROWS).save(files.temp("neighbours.png"), format="PNG", optimize=True)
    files.temp("gallery.html").write_text(_gallery_html(results, 96, "contrastkit search", files.folder.resolve()),
                                          encoding="utf-8")
    files.publish()
    return {"png": str(files.folder / "neighbours.png"), "html": str(files.folder / "gallery.html")}


def _member_lines(score: float | None, similarity: float | None, identical: bool) -> list[str]:
    lines = ["identical pixels"] if identical else []
    if score is not None:
        lines.append(f"score {score:.3f}")
    if similarity is not None:
        lines.append(f"similarity {similarity:.3f}")
    return lines


def _duplicates_html(result: "NearDuplicates", side: int, title: str, page_dir: Path) -> str:
    """The page of :func:`write_duplicates_html`."""
    cache: dict[str, str] = {}
    rows = []
    for g in result.groups:
        cells = [f'<td class="query">{_figure(g.paths[0], None, ["first of the group"], side, cache, page_dir)}</td>']
        cells += [f'<td class="member">{_figure(p, None, _member_lines(s, c, same), side, cache, page_dir)}</td>'
                  for p, s, c, same in zip(g.paths[1:], g.scores[1:], g.similarities[1:], g.identical[1:])]
        rows.append('<tr class="group-row">' + "".join(cells) + "</tr>")
    how = result.calibration.summary() if result.calibration is not None else "threshold given"
    intro = (f"{len(result.groups)} groups at score >= {result.threshold:.4f} ({how}). Each row: a group's first "
             f"image, then the others with their score and cosine similarity with it. Click a picture or a name to "
             f"open the image.")
    return _page(title, intro, rows, side)


def duplicates_output(out_dir: str | os.PathLike, overwrite: bool = False) -> OutputFiles:
    """``duplicates.html`` in ``out_dir`` as an output (checked on entry, before the search, as
    :func:`search_output`).

    Raises:
        ValueError: on entry: ``out_dir`` is a file or not writable, the page is in the way, or another search is
            writing it.
    """
    folder = Path(os.path.expanduser(os.fspath(out_dir)))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {os.fspath(out_dir)!r} is a file; expected a folder for duplicates.html")
    return OutputFiles(folder, ["duplicates.html"], "search", "search", overwrite)


def write_duplicates_html(result: "NearDuplicates", out_dir: str | os.PathLike, overwrite: bool = False,
                          files: OutputFiles | None = None) -> Path:
    """``out_dir/duplicates.html`` (:func:`duplicates_output`; or into ``files``, an output already entered): one
    ``<tr class="group-row">`` per group of near-duplicates, its images side by side, each captioned with its
    name and, after the first, its score and cosine similarity with the first ("identical pixels" for an exact
    copy); the threshold (and its calibration) heads the page. Returns its path."""
    if files is None:
        with duplicates_output(out_dir, overwrite) as entered:
            return write_duplicates_html(result, out_dir, files=entered)
    files.temp("duplicates.html").write_text(_duplicates_html(result, 96, "contrastkit near-duplicates",
                                                              files.folder.resolve()), encoding="utf-8")
    files.publish()
    return files.folder / "duplicates.html"
