"""``contrastkit export``: time and file size per format, and ONNX Runtime against eager PyTorch on the CPU.

Randomly initialised encoders (the weights do not change the time, the size or the throughput): ResNet-18 and
ResNet-50 from torchvision at width 1 with the ImageNet stem, 224 px inputs, ImageNet normalisation, written as
contrastkit checkpoints; the timm format uses timm's ``resnet18`` / ``resnet50`` (timm encoders only) when timm is
installed. Each export is timed in three parts: loading the checkpoint, writing, and the self-verification
(reload through the target library, compare with contrastkit's h on 4 images).

Throughput: images/s of the exported ONNX encoder (dynamic batch, height and width) under onnxruntime's CPU
provider against the same encoder in eager PyTorch (``torch.inference_mode``, float32; NCHW and channels_last),
on the same batch with the same number of threads (``torch.set_num_threads`` / ``intra_op_num_threads``), for
each batch size of ``--batch``. The runtimes alternate round by round, so a change in the machine's load hits all
of them; each ratio is taken within a round and the median reported. Each measurement covers at least 32 images
(more batches of a small batch size). The script ends with the throughput as a markdown table and the load
average before and after (the machine's load changes every figure: say it beside them).

    python benchmarks/export_bench.py [--archs resnet18,resnet50] [--batch 1,32,256] [--threads 1,2] [--rounds 3]
                                      [--skip-exports]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from contrastkit.config import PretrainConfig
from contrastkit.export import FORMATS, export_checkpoint
from contrastkit.export.graphs import onnx_session
from contrastkit.models import build_model, load_checkpoint_model, save_checkpoint

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def make_checkpoint(folder: Path, encoder: str, size: int = 224) -> Path:
    """A contrastkit checkpoint of a randomly initialised encoder, in pretrain's layout."""
    cfg = PretrainConfig(encoder=encoder, width=1.0, cifar_stem="off")
    torch.manual_seed(0)
    model = build_model(cfg, None, size)
    path = folder / f"{encoder.replace(':', '_')}.pt"
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(),
                     "meta": {"encoder": encoder, "feature_dim": model.encoder.feature_dim, "image_size": size,
                              "preset": "imagenet", "mean": IMAGENET[0], "std": IMAGENET[1], "classes": [],
                              "data": "random-init", "method": "simclr"}}, path)
    return path


def time_exports(arch: str, folder: Path, timm_ok: bool) -> list[dict]:
    rows = []
    for fmt in FORMATS:
        encoder = f"timm:{arch}" if fmt == "timm" else arch
        if fmt == "timm" and not timm_ok:
            continue
        ckpt = folder / f"{encoder.replace(':', '_')}.pt"
        if not ckpt.exists():
            make_checkpoint(folder, encoder)
        out = folder / f"{arch}.{fmt}"
        t0 = time.perf_counter()
        r = export_checkpoint(ckpt, fmt, out)
        total = time.perf_counter() - t0
        rows.append({"arch": arch, "encoder": encoder, "format": fmt, "total_s": round(total, 2),
                     "load_s": round(total - r["write_s"] - r["verify_s"], 2), "write_s": r["write_s"],
                     "verify_s": r["verify_s"], "mb": round(r["bytes"] / 1e6, 1), "max_rel_diff": r["max_rel_diff"],
                     "path": r["out"]})
        print(f"{arch:9s} {fmt:12s} {rows[-1]['mb']:7.1f} MB  total {total:6.2f} s (load {rows[-1]['load_s']:.2f}, "
              f"write {r['write_s']:.2f}, verify {r['verify_s']:.2f})  max rel diff {r['max_rel_diff']:.1e}",
              flush=True)
    return rows


def _seconds(fn, iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def throughput(arch: str, folder: Path, batch: int, threads: int, rounds: int, iters: int) -> dict:
    """Images/s of eager PyTorch (NCHW, channels_last) and onnxruntime, alternating round by round."""
    torch.set_num_threads(threads)
    encoder = load_checkpoint_model(folder / f"{arch}.pt")[0].encoder.eval()
    encoder_cl = load_checkpoint_model(folder / f"{arch}.pt")[0].encoder.eval().to(memory_format=torch.channels_last)
    session, _ = onnx_session(folder / f"{arch}.onnx", threads=threads)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    x_cl, x_np = x.contiguous(memory_format=torch.channels_last), x.numpy()

    def eager():
        with torch.inference_mode():
            return encoder(x)

    def eager_cl():
        with torch.inference_mode():
            return encoder_cl(x_cl)

    def ort():
        return session.run(["h"], {"input": x_np})[0]

    h_ref = eager()
    assert torch.allclose(torch.from_numpy(ort()), h_ref, rtol=1e-3, atol=1e-3 * float(h_ref.abs().max()))
    eager_cl()  # warm-up of the channels_last kernels
    runtimes = {"eager": eager, "eager_channels_last": eager_cl, "onnxruntime": ort}
    per_round: dict[str, list[float]] = {name: [] for name in runtimes}
    for r in range(rounds):
        order = list(runtimes) if r % 2 == 0 else list(reversed(runtimes))  # no runtime always runs first
        for name in order:
            per_round[name].append(batch / _seconds(runtimes[name], iters))
    ratios = [o / e for o, e in zip(per_round["onnxruntime"], per_round["eager"])]
    ratios_cl = [o / e for o, e in zip(per_round["onnxruntime"], per_round["eager_channels_last"])]
    row = {"arch": arch, "batch": batch, "threads": threads,
           **{f"{name}_img_s": round(statistics.median(v), 2) for name, v in per_round.items()},
           "ort_over_eager": round(statistics.median(ratios), 3),
           "ort_over_eager_channels_last": round(statistics.median(ratios_cl), 3),
           "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)]}
    print(f"{arch:9s} batch {batch} threads {threads}: eager {row['eager_img_s']:.2f} img/s, channels_last "
          f"{row['eager_channels_last_img_s']:.2f}, onnxruntime {row['onnxruntime_img_s']:.2f}; onnxruntime / eager "
          f"{row['ort_over_eager']:.2f} (per-round {row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f}), / "
          f"channels_last {row['ort_over_eager_channels_last']:.2f}", flush=True)
    return row


def markdown_table(rows: list[dict]) -> str:
    """The throughput rows as the markdown table of docs/results.md."""
    lines = ["| encoder | batch | threads | eager NCHW (img/s) | eager channels_last | onnxruntime | "
             "onnxruntime / eager NCHW (range) | / channels_last |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lo, hi = r["ratio_range"]
        lines.append(f"| {r['arch']} | {r['batch']} | {r['threads']} | {r['eager_img_s']:.1f} | "
                     f"{r['eager_channels_last_img_s']:.1f} | {r['onnxruntime_img_s']:.1f} | "
                     f"{r['ort_over_eager']:.2f} ({lo:.2f}-{hi:.2f}) | {r['ort_over_eager_channels_last']:.2f} |")
    return "\n".join(lines)


def _onnx_only(arch: str, folder: Path) -> None:
    """The checkpoint and its ONNX export, for the throughput alone (``--skip-exports``)."""
    ckpt = make_checkpoint(folder, arch)
    export_checkpoint(ckpt, "onnx", folder / f"{arch}.onnx")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--batch", default="1,32,256", help="comma-separated batch sizes of the throughput")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=1, help="batches per runtime per round (at least 32 images)")
    p.add_argument("--skip-exports", action="store_true", help="time the ONNX throughput only, not every format")
    p.add_argument("--dir", default=None, help="working folder (default: a temporary one, removed after)")
    args = p.parse_args()
    try:
        import timm  # noqa: F401
        timm_ok = True
    except ImportError:
        timm_ok = False
    print(f"load average before: {os.getloadavg()}; cpus: {os.cpu_count()}; torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        exports, speed = [], []
        for arch in args.archs.split(","):
            if args.skip_exports:
                _onnx_only(arch, folder)
            else:
                exports += time_exports(arch, folder, timm_ok)
        for arch in args.archs.split(","):
            for batch in (int(b) for b in args.batch.split(",")):
                iters = max(args.iters, math.ceil(32 / batch))
                for threads in (int(t) for t in args.threads.split(",")):
                    speed.append(throughput(arch, folder, batch, threads, args.rounds, iters))
    print(f"load average after: {os.getloadavg()}", flush=True)
    print(json.dumps({"exports": exports, "throughput": speed}))
    print(markdown_table(speed))


if __name__ == "__main__":
    main()
