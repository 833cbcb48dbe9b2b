"""Continuing runs (issue 21, items 3 and 6): ``--resume --extend`` trains a finished run further under a new
schedule; Ctrl-C names the checkpoint that survives and the command that resumes it; a resumed run's metrics.jsonl
holds each step once and its training time adds up across processes."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

import contrastkit.train.trainer as trainer
from contrastkit.cli import config_from_args, build_parser, main
from contrastkit.models import load_checkpoint
from contrastkit.train.metrics import drop_rows_after
from contrastkit.train.optim import scaled_lr, warmup_cosine
from reliability._common import pretrain_args

LOG = ("--log-every", "1")


def _rows(out: Path, kind: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    return [r for r in rows if kind is None or r["kind"] == kind]


def test_a_finished_run_is_refused_more_epochs_without_extend(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out, *LOG, epochs=1)) == 0
    capsys.readouterr()
    assert main(pretrain_args(folder, out, *LOG, "--resume", epochs=2)) == 2
    err = capsys.readouterr().err
    assert "epochs: checkpoint 1, now 2" in err and "--extend" in err and len(err.strip().splitlines()) == 1


def test_extend_continues_a_finished_run_under_the_new_total(folder, tmp_path, capsys):
    """1 epoch (3 steps), then --extend to 2 epochs: steps 4-6 follow the 6-step cosine from the saved state."""
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out, *LOG, epochs=1)) == 0
    first = load_checkpoint(out / "last.pt")
    assert main(pretrain_args(folder, out, *LOG, "--resume", "--extend", epochs=2)) == 0
    state = load_checkpoint(out / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (2, 0, 6)
    assert state["config"]["epochs"] == 2
    assert [r["epoch"] for r in state["history"]] == [0, 1]
    assert state["history"][0] == first["history"][0]
    (extend,) = _rows(out, "extend")
    assert extend == {"kind": "extend", "epoch": 1, "step_in_epoch": 0, "step": 3, "previous_epochs": 1,
                      "epochs": 2, "total_steps": 6}
    peak = scaled_lr(0.05, 4, "linear")
    steps = _rows(out, "step")
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    for row in steps[3:]:  # the lr a step row shows is the next step's, from the new total's schedule
        assert row["lr"] == pytest.approx(peak * warmup_cosine(row["step"], 6, 0, 0.0))
    assert steps[3]["lr"] > 0.2 * peak  # the old 3-step schedule had ended at 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["global_step"] == 6
    # --extend with the checkpoint's own total is a plain resume: nothing left to train, no second extend row
    assert main(pretrain_args(folder, out, *LOG, "--resume", "--extend", epochs=2)) == 0
    assert len(_rows(out, "extend")) == 1 and load_checkpoint(out / "last.pt")["global_step"] == 6


def test_extend_sets_the_first_steps_learning_rate_from_the_new_schedule(folder, tmp_path):
    """The optimiser's saved lr is the old schedule's; the resumed first step must use the new one's."""
    from contrastkit.runtime import resolve_device
    from contrastkit.methods import check_options
    from contrastkit.train.run import build_run
    from contrastkit.train.state import load_resume, restore

    out = tmp_path / "run"
    assert main(pretrain_args(folder, out, epochs=1)) == 0
    cfg = config_from_args(build_parser().parse_args(pretrain_args(folder, out, "--resume", "--extend", epochs=4)))
    cfg = check_options(cfg)
    saved = load_resume(cfg)
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)  # 3-step cosine ended
    run = build_run(cfg, resolve_device("cpu"), 0, 1, fresh=False)
    restore(run, saved)
    peak = scaled_lr(0.05, 4, "linear")
    for group in run.optimizer.param_groups:
        assert group["lr"] == pytest.approx(peak * warmup_cosine(3, 12, 0, 0.0))


@pytest.mark.parametrize("epochs, message", [(1, "must be more than 1"), (3, None)])
def test_extend_checks_the_new_total(folder, tmp_path, capsys, epochs, message):
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out, "--max-steps", "4", epochs=2)) == 0  # stopped in epoch 2
    capsys.readouterr()
    rc = main(pretrain_args(folder, out, "--resume", "--extend", "--max-steps", "0", epochs=epochs))
    if message:
        assert rc == 2 and message in capsys.readouterr().err
    else:  # a mid-epoch checkpoint extended: it finishes its epoch, then trains to the new total
        assert rc == 0 and load_checkpoint(out / "last.pt")["global_step"] == 9


def _interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C right after the step row of global step ``step`` is logged."""
    real = trainer.log_step

    def log_then_interrupt(run, state, *args):
        real(run, state, *args)
        if state.global_step == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "log_step", log_then_interrupt)


def test_ctrl_c_names_the_checkpoint_and_the_command_that_resumes_it(folder, tmp_path, capsys, monkeypatch):
    """Stopped at step 5 (epoch 2, step 2 of 3) with the epoch-1 checkpoint (step 3) on disk; the printed command
    resumes; metrics.jsonl then holds steps 1-6 once each, and the time of both processes adds up."""
    out = tmp_path / "run"
    argv = pretrain_args(folder, out, *LOG, epochs=2)
    _interrupt_at(monkeypatch, 5)
    assert main(argv) == 130
    lines = capsys.readouterr().err.splitlines()
    (said,) = [line for line in lines if line.startswith("interrupted")]
    assert f"{out / 'last.pt'} survives" in said and "end of epoch 1 of 2" in said and "global step 3" in said
    (command,) = [line for line in lines if line.startswith("resume with: ")]
    words = shlex.split(command.removeprefix("resume with: "))
    assert words[0] == "contrastkit" and words[1:] == [*argv, "--resume"]
    assert [r["step"] for r in _rows(out, "step")] == [1, 2, 3, 4, 5]  # steps 4-5 are not in the checkpoint
    time_at_checkpoint = load_checkpoint(out / "last.pt")["train_time"]
    assert time_at_checkpoint > 0

    monkeypatch.undo()
    assert main(words[1:]) == 0
    assert [r["step"] for r in _rows(out, "step")] == [1, 2, 3, 4, 5, 6]
    epochs = _rows(out, "epoch")
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert epochs[0]["train_time_s"] == pytest.approx(time_at_checkpoint)
    assert epochs[1]["train_time_s"] > time_at_checkpoint  # accumulated, not restarted at 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_time_s"] == pytest.approx(load_checkpoint(out / "last.pt")["train_time"], abs=0.01)
    assert summary["train_time_s"] >= round(time_at_checkpoint, 2)


def test_ctrl_c_before_the_first_checkpoint_says_so(folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = pretrain_args(folder, out, *LOG, "--overwrite", epochs=1)
    _interrupt_at(monkeypatch, 1)
    assert main(argv) == 130
    lines = capsys.readouterr().err.splitlines()
    (said,) = [line for line in lines if line.startswith("interrupted")]
    assert "before the first checkpoint" in said and "nothing to resume" in said
    (command,) = [line for line in lines if line.startswith("start again with: ")]
    words = shlex.split(command.removeprefix("start again with: "))
    assert words.count("--overwrite") == 1 and "--resume" not in words
    monkeypatch.undo()
    assert main(words[1:]) == 0  # OUT holds the stopped run's logs: the command replaces them
    assert [r["step"] for r in _rows(out, "step")] == [1, 2, 3]


def test_drop_rows_after_keeps_the_checkpoints_rows_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"kind": "step", "step": s} for s in (1, 2, 3, 4)] + [{"kind": "epoch", "step": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "step", "st')
    drop_rows_after(path, 3)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [rows[0], rows[1], rows[2], rows[4]]
