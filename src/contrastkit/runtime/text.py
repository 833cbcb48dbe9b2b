"""File names as data: shown in text, written to CSV cells, never read as commands.

A file name may hold any byte but ``/`` and NUL: a newline (which would split one result into two lines), an
escape sequence (which a terminal would act on), or a leading ``=``, ``+``, ``-`` or ``@`` (which a spreadsheet
opening the CSV would evaluate as a formula). :func:`printable` escapes control characters for text; :func:`csv_cell`
also escapes backslashes and guards a leading formula character with ``'`` (the spreadsheets' own mark for text),
reversibly: :func:`from_csv_cell` gives the name back.
"""
from __future__ import annotations

import re

__all__ = ["printable", "csv_cell", "from_csv_cell"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_FORMULA_START = ("=", "+", "-", "@", "'")


def _escape_char(match: re.Match) -> str:
    ch = match.group(0)
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def printable(text: object, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``), for a terminal or a log; with
    ``keep_newlines``, line breaks stay (a message of several lines) and only the others are escaped."""
    text = str(text)
    if keep_newlines:
        return "\n".join(_CONTROL.sub(_escape_char, line) for line in text.split("\n"))
    return _CONTROL.sub(_escape_char, text)


def csv_cell(text: object) -> str:
    """A name as a CSV cell a spreadsheet shows as text: backslashes and control characters escaped, and a
    leading ``= + - @ '`` guarded by a ``'``. :func:`from_csv_cell` reverses it."""
    cell = _CONTROL.sub(_escape_char, str(text).replace("\\", "\\\\"))
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


_ESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4})")


def _unescape_char(match: re.Match) -> str:
    code = match.group(1)
    if code == "\\":
        return "\\"
    if code in ("n", "r", "t"):
        return {"n": "\n", "r": "\r", "t": "\t"}[code]
    return chr(int(code[1:], 16))


def from_csv_cell(cell: str) -> str:
    """The name :func:`csv_cell` wrote as ``cell``."""
    if cell.startswith("'"):
        cell = cell[1:]
    return _ESCAPE.sub(_unescape_char, cell)
