"""What every subcommand shares: printing results, turning errors into one line, and running a handler."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from ..runtime.ownership import os_error_message
from ..runtime.text import printable

__all__ = ["print_json", "error_text", "run_handler", "check_positive"]


def print_json(result: Any) -> None:
    print(json.dumps(result, default=float))


def check_positive(flag: str, value: Any) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be >= 1, got {value}")


def error_text(exc: BaseException) -> str:
    """The message of an error, its control characters escaped (a file name's newline or terminal escape); one
    re-raised from a DataLoader worker keeps only the original's last line."""
    text = os_error_message(exc) if isinstance(exc, OSError) else str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]  # "ValueError: cannot read image file ..."
        text = last.split(": ", 1)[1] if ": " in last else last
    return printable(text, keep_newlines=True)


def run_handler(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Run the subcommand's handler (``args.handler(args, argv)``): exit code 0, 2 with one line on stderr for a
    user error, after Ctrl-C or a stopping signal (SIGTERM, SIGUSR1) what the handler says about it
    (``args.interrupted``) and the shell's code for that signal (130 for Ctrl-C, 128 + its number otherwise)."""
    try:
        code = args.handler(args, argv)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:  # CheckpointError is a RuntimeError
        print(f"contrastkit {args.command}: error: {error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # train.signals.Interrupted carries the signal's exit code
        print(getattr(args, "interrupted", None) or "interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    return code or 0
