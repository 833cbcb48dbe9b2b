"""channels_last on a CPU: never for the strided 1x1 convolutions whose oneDNN weight gradient fails in it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastkit.models import build_model
from contrastkit.train.memory_format import FEWEST_SAFE_CHANNELS, unsafe_channels_last_convs, use_channels_last

CPU, CUDA, META = torch.device("cpu"), torch.device("cuda"), torch.device("meta")


def _resnet(width: float):
    return build_model("resnet18", cifar_stem=True, width=width)


def test_the_narrow_shortcuts_are_found_and_the_wide_ones_are_not():
    names = unsafe_channels_last_convs(_resnet(0.0625))  # 4 channels into layer2's shortcut, 8 into layer3's
    assert names == ["encoder.backbone.layer2.0.downsample.0", "encoder.backbone.layer3.0.downsample.0"]
    assert unsafe_channels_last_convs(_resnet(0.25)) == []  # 16 channels and more
    assert unsafe_channels_last_convs(build_model("resnet50", cifar_stem=True, width=0.0625)) == []


def test_auto_keeps_a_narrow_model_in_the_default_format_on_cpu_only():
    narrow, wide = _resnet(0.0625), _resnet(0.25)
    assert use_channels_last("auto", wide, CPU) and use_channels_last("auto", wide, CUDA)
    assert not use_channels_last("auto", narrow, CPU)
    assert use_channels_last("auto", narrow, CUDA)  # cuDNN is not affected
    assert not use_channels_last("auto", wide, META) and use_channels_last("on", wide, META)
    assert not use_channels_last("off", wide, CUDA)


def test_on_with_a_narrow_model_on_cpu_names_the_convolution():
    with pytest.raises(ValueError, match=r"encoder\.backbone\.layer2\.0\.downsample\.0 is a strided 1x1 "
                                         r"convolution with 4 input channels.*--channels-last auto"):
        use_channels_last("on", _resnet(0.0625), CPU)


_GRADIENT = """
import sys
from contrastkit.train.memory_format import strided_1x1_gradient_error
err = strided_1x1_gradient_error(*map(int, sys.argv[1:]))
sys.exit(0 if err < 1e-4 else f"relative error {err:.2e}")
"""


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["native", "avx2"])
@pytest.mark.parametrize("channels", [FEWEST_SAFE_CHANNELS, 2 * FEWEST_SAFE_CHANNELS])
def test_at_the_threshold_the_channels_last_weight_gradient_is_right(isa, channels):
    """The guard's threshold is safe: in a fresh process (a failure can crash or hang), the channels_last
    weight gradient of a strided 1x1 convolution equals the float64 one, at sizes where 8 channels fail."""
    env = dict(os.environ)
    src = str(Path(__file__).parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else src
    if isa == "avx2":
        env.update(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="default")
    for n, size in [(2, 64), (12, 32), (12, 64), (2, 128)]:
        proc = subprocess.run([sys.executable, "-c", _GRADIENT, str(channels), str(n), str(size)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (n, size, proc.returncode, proc.stderr[-2000:])
