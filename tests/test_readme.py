"""The README's Python API example runs as written."""
from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs():
    text = README.read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert torch.isfinite(namespace["loss"]) and torch.isfinite(namespace["supcon"])
    assert namespace["x1"].shape == (64, 3, 32, 32) and namespace["z1"].shape[0] == 64
    assert namespace["fast"].check_values is False
