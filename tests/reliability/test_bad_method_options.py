"""Bad options of the queue and multi-label methods (issue 30): a clear error at start, naming the option, what it
got and what it takes, and nothing written. None of these tests trains a step."""
from __future__ import annotations

import pytest

from contrastkit.cli import main
from reliability._common import FAST


def _run(argv, capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _pretrain(method: str, data, out, *extra: str) -> list[str]:
    return ["pretrain", "--method", method, "--data", str(data), "--epochs", "1", "--out", str(out), *FAST, *extra]


@pytest.mark.parametrize("method, extra, message", [
    # batch 4 x 2 views = 8 keys a step
    ("simclr-queue", ["--queue-size", "12"], "--queue-size must be a multiple of the keys each step adds, "
                                             "--batch-size x --n-views = 4 x 2 = 8 (the whole queue is replaced "
                                             "every K / 8 steps), got 12; e.g. 8 or 16"),
    ("supcon-queue", ["--queue-size", "0"], "--queue-size must be a multiple of the keys each step adds"),
    ("simclr-queue", ["--queue-size", "16", "--n-views", "3"], "= 4 x 3 = 12"),
    ("simclr-queue", ["--momentum-encoder", "1"], "--momentum-encoder must be in [0, 1)"),
    ("supcon-queue", ["--momentum-encoder", "-0.1"], "--momentum-encoder must be in [0, 1)"),
    ("simclr-queue", ["--loss", "margin"], "--loss margin applies to --method simclr"),
    ("simclr", ["--queue-size", "8"], "--queue-size applies to --method simclr-queue or supcon-queue only, got "
                                      "--method simclr"),
    ("supcon", ["--momentum-encoder", "0.9"], "--momentum-encoder applies to --method simclr-queue or "
                                              "supcon-queue only"),
    ("simclr-queue", ["--labeled-fraction", "0.5"], "--labeled-fraction applies to SupCon"),
    ("supcon-queue", ["--supcon-variant", "in"], "uses SupCon's L_out over the batch's keys and the queue"),
])
def test_bad_queue_options_fail_at_start(folder, tmp_path, capsys, method, extra, message):
    out = tmp_path / "run"
    rc, err = _run(_pretrain(method, folder, out, *extra), capsys)
    assert rc == 2 and message in err, err
    assert not out.exists()
