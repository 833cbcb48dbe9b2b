"""The optimiser step alone: LARS one parameter at a time against multi-tensor LARS, and fused SGD.

On a GPU each kernel launch costs a few microseconds of host time whatever its size, and a ResNet's optimiser step is
many small kernels: the number of kernels (aten operators) per step is the figure that carries over from this CPU to
a GPU, and the time per step is this machine's. Counted with a TorchDispatchMode on one step (after the first, which
creates the momentum buffers); timed as the median of ``--steps`` steps after warm-up. Gradients are fixed random
tensors: the step is all that runs.

    .venv/bin/python benchmarks/optim_bench.py                          # ResNet-18 (CIFAR stem), full width
    .venv/bin/python benchmarks/optim_bench.py --encoder resnet50 --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from contrastkit import build_model
from contrastkit.train.optim import LARS, build_optimizer, param_groups


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _optimizer(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if name == "lars-loop":
        return LARS(param_groups(model, 1e-6), lr=0.3, momentum=0.9, foreach=False)
    if name == "lars-foreach":
        return LARS(param_groups(model, 1e-6), lr=0.3, momentum=0.9, foreach=True)
    return build_optimizer(model, "sgd", 0.3, 0.9, 5e-4)  # fused where the build has it


def measure(name: str, encoder: str, device: torch.device, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(encoder, cifar_stem=True).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = _optimizer(name, model)
    opt.step()  # the first step creates the momentum buffers
    with _CountOps() as counter:
        opt.step()
    times = []
    for _ in range(steps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"optimizer": name, "params": len(params), "ops": counter.count, "ms": 1e3 * statistics.median(times[3:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [measure(name, args.encoder, device, args.steps) for name in ("lars-loop", "lars-foreach", "sgd-fused")]
    base = rows[0]
    print(f"{args.encoder} on {device} ({torch.get_num_threads()} threads), {rows[0]['params']} parameter tensors")
    print(f"{'optimizer':<14}{'ops/step':>10}{'ms/step':>10}{'ops vs loop':>13}{'speed vs loop':>15}")
    for r in rows:
        print(f"{r['optimizer']:<14}{r['ops']:>10}{r['ms']:>10.2f}{base['ops'] / r['ops']:>12.1f}x"
              f"{base['ms'] / r['ms']:>14.2f}x")


if __name__ == "__main__":
    main()
