"""A tracking failure never stops training; ``--tracking`` and ``--tracking-experiment`` are checked; the pieces
that map rows and options to metrics and params."""
from __future__ import annotations

import json
import socket
import sys
import warnings

import pytest
import torch

from conftest import TINY
from contrastkit.cli import build_parser, config_from_args, main
from contrastkit.config import PretrainConfig
from contrastkit.tracking import FanOut, Guarded, Tracker, TrackingWarning, flat_params, row_metrics
from contrastkit.tracking.mlflow_tracker import check_reachable
from contrastkit.tracking.base import TrackingUnavailable
from contrastkit.tracking.wandb_tracker import wandb_mode


class Recording(Tracker):
    """Records its calls; ``fail_at`` makes that call of log_metrics raise, as a server going down would."""

    name = "recording"

    def __init__(self, fail_at: int = 0) -> None:
        self.calls, self.fail_at = [], fail_at

    def log_metrics(self, metrics, step):
        self.calls.append((step, dict(metrics)))
        if len(self.calls) == self.fail_at:
            raise ConnectionError("server went away\nlong traceback text")


def test_a_failing_tracker_warns_once_and_the_others_go_on():
    broken, fine = Recording(fail_at=2), Recording()
    fan = FanOut([Guarded(broken), Guarded(fine)])
    with pytest.warns(TrackingWarning, match=r"^recording tracking failed \(ConnectionError: server went away\); "
                                             r"the run goes on with its local logs only") as caught:
        for step in range(1, 6):
            fan.log_metrics({"train/loss": 1.0 / step}, step)
    assert len([w for w in caught if issubclass(w.category, TrackingWarning)]) == 1
    assert [s for s, _ in broken.calls] == [1, 2] and [s for s, _ in fine.calls] == [1, 2, 3, 4, 5]
    assert bool(fan)  # one tracker is still on


def test_a_missing_package_is_a_warning_and_steps_a_run_holds_are_skipped():
    def missing():
        raise ImportError("mlflow is not installed: pip install 'contrastkit[mlflow]'")

    with pytest.warns(TrackingWarning, match=r"pip install 'contrastkit\[mlflow\]'"):
        guarded = Guarded(factory=missing, name="mlflow")
    assert not guarded.active and guarded.do("log_params", {"a": "1"}) is None
    recording = Recording()
    resumed = Guarded(recording)
    resumed.skip_through = {"train/loss": 4, "epoch/loss": 3}
    for step in (3, 4, 5):
        resumed.log_metrics({"train/loss": 0.5, "epoch/loss": 0.4}, step)
    assert recording.calls == [(4, {"epoch/loss": 0.4}), (5, {"train/loss": 0.5, "epoch/loss": 0.4})]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("failure", ["package missing", "server down"])
def test_training_goes_on_when_tracking_cannot_start(failure, tmp_path, image_folder, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    if failure == "package missing":
        monkeypatch.setitem(sys.modules, "mlflow", None)  # import raises ImportError
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["pretrain", "--data", str(image_folder), "--epochs", "1", "--log-every", "1",
                     "--tracking", "mlflow", "--out", str(run), *TINY]) == 0
    tracking = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(tracking) == 1 and tracking[0].startswith("mlflow tracking failed")
    assert ("contrastkit[mlflow]" in tracking[0]) == (failure == "package missing")
    assert len([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]) == 4
    assert torch.load(run / "last.pt", weights_only=True)["tracking"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]  # no store created anywhere


def test_unreachable_stores_are_refused_up_front(tmp_path):
    with pytest.raises(TrackingUnavailable, match="does not answer"):
        check_reachable(f"http://127.0.0.1:{_free_port()}", existing=False)
    with pytest.raises(TrackingUnavailable, match="does not exist"):
        check_reachable(f"sqlite:///{tmp_path}/gone.db", existing=True)
    check_reachable(f"sqlite:///{tmp_path}/new.db", existing=False)  # a new run may create its store
    assert not (tmp_path / "new.db").exists()


def test_wandb_is_offline_unless_logged_in(tmp_path, monkeypatch):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode() == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert wandb_mode() == "online"


def test_tracking_options_are_repeatable_comma_separated_and_checked():
    args = build_parser().parse_args(["pretrain", "--tracking", "mlflow,wandb", "--tracking", "MLflow"])
    cfg = config_from_args(args)
    cfg.validate()
    assert cfg.tracking_backends() == ["mlflow", "wandb"]
    assert PretrainConfig().tracking_backends() == [] and PretrainConfig(tracking=["none"]).tracking_backends() == []
    assert PretrainConfig(tracking="wandb").tracking_backends() == ["wandb"]  # as a YAML file may give it
    for bad, message in ((["comet"], "--tracking must be one or more of mlflow, wandb, none, got comet"),
                         (["none,mlflow"], "--tracking none turns tracking off; got it with mlflow"),
                         ([3], "--tracking must be names")):
        with pytest.raises(ValueError, match=message):
            PretrainConfig(tracking=bad).validate()
    with pytest.raises(ValueError, match="--tracking-experiment must be a name of 1-128 characters without /"):
        PretrainConfig(tracking_experiment="team/project").validate()


def test_rows_become_metrics_and_options_params():
    assert row_metrics({"kind": "step", "step": 7, "epoch": 0, "loss": 1.5, "lr": 0.1, "images_per_s": 30}) == \
        {"train/loss": 1.5, "train/lr": 0.1, "train/images_per_s": 30.0}
    assert row_metrics({"kind": "epoch", "step": 9, "epoch": 2, "loss": 1.0, "knn_top1": 0.5}) == \
        {"epoch/loss": 1.0, "epoch/knn_top1": 0.5}
    assert row_metrics({"kind": "extend", "step": 9, "epochs": 4}) == {}
    params = flat_params(PretrainConfig(augment={"rotate": 0.5}).to_dict())
    assert params["augment.rotate"] == "0.5" and params["method"] == "simclr" and params["crop_scale"] == "[0.08, 1.0]"
    assert params["temperature"] == "null" and all(isinstance(v, str) for v in params.values())
