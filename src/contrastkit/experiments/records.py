"""The experiments' record store: JSON records written atomically, one fingerprint equality, and work that runs
once per fingerprint.

A record (a run's ``result.json``, a stage's ``stages/<key>.json``) holds the fingerprint of what produced it: the
options that change what is computed. Work whose record holds the same fingerprint is not done again, which is
how an experiment resumes.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..config import PretrainConfig
from ..evaluate.report import to_jsonable
from ..methods import with_method_defaults
from ..runtime.ownership import claim

__all__ = ["VOLATILE", "read_json", "write_json", "same_fingerprint", "config_fingerprint", "cached"]

#: Config fields that do not change what a run computes (left out of fingerprints).
VOLATILE = ("device", "num_workers", "progress", "log_every", "out", "resume", "data_root")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or unreadable (a record not written yet)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file, then a rename), listed in its folder's marker
    as the experiment's (:mod:`contrastkit.runtime.ownership`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    claim(path.parent, [path.name, tmp.name], "experiment", kind="experiment")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")
    os.replace(tmp, path)


def _json_equal(a: Any, b: Any) -> bool:
    """Equality after a JSON round trip (tuples become lists)."""
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def config_fingerprint(cfg: PretrainConfig) -> dict[str, Any]:
    """The options of a run as it resolves them (a temperature left unset is its method's), without the
    :data:`VOLATILE` ones."""
    return {k: v for k, v in with_method_defaults(cfg).to_dict().items() if k not in VOLATILE}


def same_fingerprint(stored: Any, current: dict[str, Any]) -> bool:
    """Whether a stored fingerprint describes the current work.

    Under a ``config`` key, options present on one side only count as equal when they hold the option's default,
    so an option added to PretrainConfig later (with a default that keeps the old behaviour) does not make
    finished runs look unfinished; everything else must be equal.
    """
    if not isinstance(stored, dict) or set(stored) != set(current):
        return False
    if not _json_equal({k: v for k, v in stored.items() if k != "config"},
                       {k: v for k, v in current.items() if k != "config"}):
        return False
    if "config" not in current:
        return True
    defaults = PretrainConfig().to_dict()
    old, new = stored.get("config") or {}, current["config"]
    for key in set(old) | set(new):
        if key not in defaults:  # an option that PretrainConfig no longer has
            continue
        if not _json_equal(old.get(key, defaults[key]), new.get(key, defaults[key])):
            return False
    return True


def cached(path: Path, fingerprint: dict[str, Any], work: Callable[[], dict[str, Any]],
           fields: dict[str, Any]) -> dict[str, Any]:
    """The record at ``path`` when it holds ``fingerprint`` (with ``resumed`` True); else run ``work() -> metrics``
    and write ``{**fields, fingerprint, status, metrics, wall_time_s}`` there."""
    stored = read_json(path)
    if stored is not None and same_fingerprint(stored.get("fingerprint"), fingerprint):
        return {**stored, "resumed": True}
    t0 = time.perf_counter()
    metrics = work()
    record = {**fields, "fingerprint": fingerprint, "status": "ok", "resumed": False, "metrics": metrics,
              "wall_time_s": round(time.perf_counter() - t0, 1)}
    write_json(record, path)
    return record
