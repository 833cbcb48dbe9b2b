"""Hypothesis fuzzing of the command line (issue 6): for any argv, ``main`` returns 0 or 2 (or
argparse exits with 0 or 2) and never shows a traceback.

Argv lists are built from the real parser: each subcommand's own flags with values of their type,
edge values (nan, inf, negative, huge), choices, and random strings; plus junk tokens and a
``--config`` YAML file of random content. The work behind each command is replaced by a stub that
runs only what happens before any work (option validation, device resolution), so the fuzzer
exercises parsing and validation quickly and writes nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import contrastkit.data.preview
import contrastkit.experiments.demo
import contrastkit.experiments
import contrastkit.evaluate.frozen
import contrastkit.evaluate.protocols
import contrastkit.train
from contrastkit.cli import build_parser, main
from contrastkit.models import CheckpointError
from contrastkit.runtime import resolve_device

_SUBPARSERS = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices

_junk = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_numbers = st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400", "-0", "0", "-1", "1e-320", str(2**64), "0x10",
                            "1_000", " 3 ", ""])


def _mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` 9 times in 10: most argv lists get past argparse, to the validation behind it."""
    return st.integers(0, 9).flatmap(lambda i: good if i else bad)


_yaml_values = st.one_of(_numbers, _junk, st.sampled_from(
    ["[1, 2]", "{a: 1}", "[1", "{", "a: b: c", "!!binary aGk=", "!!python/object:os.system x", "null",
     "2020-01-01", "yes", "'", "- 1", "&a 1", "*b"]))


def _values(action: argparse.Action) -> st.SearchStrategy[list[str]]:
    """Values for one option: of its type (and at its edges), or anything."""
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        return st.just([])
    if action.choices:
        one = _mostly(st.sampled_from([str(c) for c in action.choices]), _junk)
    elif action.type is int:
        one = _mostly(st.one_of(st.integers(-3, 300), st.integers(-(2**70), 2**70)).map(str),
                      st.one_of(_numbers, _junk))
    elif action.type is float:
        one = _mostly(st.one_of(st.floats(-2, 2), st.floats(allow_nan=True, allow_infinity=True)).map(repr),
                      st.one_of(_numbers, _junk))
    elif getattr(action.type, "__name__", "") == "_key_value":
        one = _mostly(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
            ["rotate", "cutout", "color", "size", "blur", "crop_scale", "", "nope"]), _yaml_values), _junk)
    else:
        one = _junk
    n = action.nargs if isinstance(action.nargs, int) else 1
    return st.lists(one, min_size=n, max_size=n)


@st.composite
def argvs(draw) -> tuple[list[str], str]:
    """(argv, YAML text for the --config file)."""
    command = draw(_mostly(st.sampled_from(sorted(_SUBPARSERS)), _junk))
    argv = [command]
    parser = _SUBPARSERS.get(command)
    if parser is not None:
        options = [a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")]
        positional = [a for a in parser._actions if not a.option_strings]
        for _ in positional:
            argv.append(draw(_mostly(st.sampled_from(["list", "temperature", "losses"]), _junk)))
        for action in draw(st.lists(st.sampled_from(options), max_size=6)):
            flag = draw(st.sampled_from(action.option_strings))
            argv += [flag, *draw(_values(action))]
        if command == "pretrain" and draw(st.booleans()):
            argv += ["--config", "@CONFIG"]
        if draw(st.integers(0, 29)) == 0:
            argv.append("--help")
    argv += draw(_mostly(st.just([]), st.lists(_junk, min_size=1, max_size=2)))
    yaml_text = draw(_mostly(
        st.lists(st.builds(lambda k, v: f"{k}: {v}", st.sampled_from(
            ["epochs", "temperature", "batch-size", "augment", "crop_scale", "on_nonfinite", "seed", "width",
             "lr", "nope", "1"]), _yaml_values), max_size=3).map("\n".join),
        st.text(max_size=60)))
    return argv, yaml_text


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    """Every command's work replaced by its checks before any work; relative outputs land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    def pretrain(cfg):
        cfg.validate()
        resolve_device(cfg.device)
        return {"rank": 0}

    def no_checkpoint(checkpoint, device="cpu"):
        raise CheckpointError(f"stub: {checkpoint} not loaded")

    def no_data(name, **kwargs):
        raise ValueError(f"stub: {name} not loaded")

    def demo(out, epochs=None, seed=0):
        contrastkit.experiments.demo.demo_config(out, epochs=epochs, seed=seed).validate()

    def experiment(name, **kwargs):
        from contrastkit.experiments import get_budget, get_experiment

        get_experiment(name)
        get_budget(kwargs["budget"])

    monkeypatch.setattr(contrastkit.train, "pretrain", pretrain)
    monkeypatch.setattr(contrastkit.evaluate.protocols, "load_checkpoint_model", no_checkpoint)
    monkeypatch.setattr(contrastkit.evaluate.frozen, "load_dataset", no_data)
    monkeypatch.setattr(contrastkit.data.preview, "load_dataset", no_data)
    monkeypatch.setattr(contrastkit.experiments.demo, "run_demo", demo)
    monkeypatch.setattr(contrastkit.experiments, "run_experiment", experiment)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=argvs())
def test_cli_never_shows_a_traceback(stubbed, tmp_path, case):
    argv, yaml_text = case
    config = tmp_path / "fuzz.yaml"
    config.write_text(yaml_text)
    argv = [str(config) if a == "@CONFIG" else a for a in argv]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            rc = exc.code
    event(f"exit {rc}: " + ("argparse" if "usage:" in err.getvalue() else "checks" if rc else "accepted"))
    assert rc in (0, 2), (argv, err.getvalue())
    assert "Traceback" not in err.getvalue(), argv
