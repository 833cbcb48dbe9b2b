"""Time and peak memory of contrastive losses: contrastkit's tiled kernel against its peers.

Each (implementation, N) runs in its own subprocess so that peak memory is
honest: the worker builds its inputs, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), runs one warm-up and ``--repeats`` timed
forward+backward passes, and reports the median time and ``VmHWM - RSS``
(extra peak resident memory over the inputs). Workers run under an
address-space cap (``--mem-cap-gb`` on top of what the imports map), so a peer
asking for more reports "OOM" instead of exhausting the machine.

Implementations (fp32, D = 128 by default, inputs z1, z2 of shape (N, D)):

* ``contrastkit_ntxent``: ``contrastkit.losses.NTXentLoss(0.5)``
* ``contrastkit_supcon``: ``contrastkit.losses.SupConLoss(0.1)``, labels of 10 classes, V = 2
* ``lightly_ntxent``: ``lightly.loss.NTXentLoss(0.5)``
* ``pml_ntxent``, ``pml_supcon``: pytorch-metric-learning's ``NTXentLoss(0.5)``, ``SupConLoss(0.1)``
* ``plain_ntxent``: matmul + cross_entropy over the (2N, 2N) logits (tests/reference_losses.py)

Usage::

    python benchmarks/loss_bench.py                      # N = 1024 4096, every implementation
    python benchmarks/loss_bench.py --n 32768 --impl contrastkit_ntxent contrastkit_supcon
    python benchmarks/loss_bench.py --threads 1 --rounds 3      # per core, interleaved rounds

Prints a table, then, last, one JSON line: per N, time and extra memory of each
implementation and the ratios of contrastkit to each peer.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

IMPLS = ["contrastkit_ntxent", "contrastkit_supcon", "lightly_ntxent", "pml_ntxent", "pml_supcon", "plain_ntxent"]
# Which contrastkit entry each peer is compared with.
PEER_OF = {
    "lightly_ntxent": "contrastkit_ntxent",
    "pml_ntxent": "contrastkit_ntxent",
    "plain_ntxent": "contrastkit_ntxent",
    "pml_supcon": "contrastkit_supcon",
}
HERE = os.path.dirname(os.path.abspath(__file__))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _build(impl: str, n: int, dim: int):
    """Return a closure computing the loss of (z1, z2, labels) for ``impl``."""
    import torch

    if impl == "contrastkit_ntxent":
        from contrastkit.losses import NTXentLoss

        loss = NTXentLoss(0.5)
        return lambda z1, z2, y: loss(z1, z2)
    if impl == "contrastkit_supcon":
        from contrastkit.losses import SupConLoss

        loss = SupConLoss(0.1)
        return lambda z1, z2, y: loss(torch.stack([z1, z2], dim=1), y)  # (N, 2, D)
    if impl == "lightly_ntxent":
        from lightly.loss import NTXentLoss

        loss = NTXentLoss(temperature=0.5)
        return lambda z1, z2, y: loss(z1, z2)
    if impl == "pml_ntxent":
        from pytorch_metric_learning.losses import NTXentLoss

        loss = NTXentLoss(temperature=0.5)
        ids = torch.arange(n).repeat(2)  # (2N,) each sample its own class
        return lambda z1, z2, y: loss(torch.cat([z1, z2]), ids)
    if impl == "pml_supcon":
        from pytorch_metric_learning.losses import SupConLoss

        loss = SupConLoss(temperature=0.1)
        return lambda z1, z2, y: loss(torch.cat([z1, z2]), y.repeat(2))
    if impl == "plain_ntxent":
        sys.path.insert(0, os.path.join(HERE, "..", "tests"))
        import reference_losses

        return lambda z1, z2, y: reference_losses.ntxent_plain(z1, z2, 0.5)
    raise ValueError(f"unknown implementation {impl!r}, expected one of {IMPLS}")


def worker(impl: str, n: int, dim: int, repeats: int, mem_cap_gb: float, threads: int) -> dict:
    """Run in a fresh process: time and peak memory of forward+backward."""
    import resource

    import torch

    if threads > 0:
        torch.set_num_threads(threads)

    fn = _build(impl, n, dim)
    cap = _status_kb("VmSize") * 1024 + int(mem_cap_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(n, dim, generator=g).requires_grad_(True)
    z2 = torch.randn(n, dim, generator=g).requires_grad_(True)
    labels = torch.randint(0, 10, (n,), generator=g)
    times = []
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        baseline_kb = _status_kb("VmRSS")
        for i in range(repeats + 1):
            z1.grad = z2.grad = None
            t0 = time.perf_counter()
            loss = fn(z1, z2, labels)
            loss.backward()
            elapsed = time.perf_counter() - t0
            if i > 0:  # the first pass is the warm-up
                times.append(elapsed)
            del loss
        peak_kb = _status_kb("VmHWM")
    except (MemoryError, RuntimeError) as exc:  # allocation refused by the address-space cap
        return {"impl": impl, "n": n, "status": "OOM", "error": str(exc).splitlines()[0][:200]}
    return {
        "impl": impl,
        "n": n,
        "status": "ok",
        "time_s": statistics.median(times),
        "min_time_s": min(times),
        "extra_mb": (peak_kb - baseline_kb) / 1024,
        "threads": torch.get_num_threads(),
    }


def _run_worker(impl: str, n: int, args: argparse.Namespace) -> dict:
    """Run one worker subprocess and parse its JSON line."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, str(n), "--dim", str(args.dim),
           "--repeats", str(args.repeats), "--mem-cap-gb", str(args.mem_cap_gb), "--threads", str(args.threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "n": n, "status": "timeout"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    # Killed by a signal (the kernel's OOM killer) or failed otherwise.
    return {"impl": impl, "n": n, "status": "OOM" if proc.returncode < 0 else "error",
            "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1024, 4096], help="batch sizes N (2N views)")
    parser.add_argument("--impl", nargs="+", default=IMPLS, choices=IMPLS, help="implementations to run")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension D")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes after one warm-up")
    parser.add_argument("--mem-cap-gb", type=float, default=12.0, help="address-space cap of each worker")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per worker")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in each worker (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=1, help="passes over all (N, implementation) pairs")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.dim, args.repeats, args.mem_cap_gb,
                                args.threads)))
        return

    results: dict[int, dict[str, dict]] = {n: {} for n in args.n}
    runs: dict[tuple[int, str], list[dict]] = {}
    print(f"{'N':>6} {'implementation':<20} {'round':>5} {'median s':>9} {'min s':>8} {'extra MB':>9}  status",
          flush=True)
    # Rounds visit every (N, implementation) in turn, so that a change of load on a shared
    # machine hits all implementations alike; each figure is then the median over rounds.
    for rnd in range(args.rounds):
        for n in args.n:
            for impl in args.impl:
                res = _run_worker(impl, n, args)
                runs.setdefault((n, impl), []).append(res)
                if res["status"] == "ok":
                    print(f"{n:>6} {impl:<20} {rnd:>5} {res['time_s']:>9.3f} {res['min_time_s']:>8.3f} "
                          f"{res['extra_mb']:>9.1f}  ok", flush=True)
                else:
                    print(f"{n:>6} {impl:<20} {rnd:>5} {'-':>9} {'-':>8} {'-':>9}  {res['status']} "
                          f"{res.get('error', '')}", flush=True)
    print(f"\nSummary (median over {args.rounds} round(s) of the per-round median of {args.repeats} passes):")
    print(f"{'N':>6} {'implementation':<20} {'time s':>9} {'best s':>8} {'extra MB':>9}  status")
    for (n, impl), rs in runs.items():
        ok = [r for r in rs if r["status"] == "ok"]
        if ok:
            res = {"impl": impl, "n": n, "status": "ok", "time_s": statistics.median(r["time_s"] for r in ok),
                   "min_time_s": min(r["min_time_s"] for r in ok), "extra_mb": max(r["extra_mb"] for r in ok)}
            print(f"{n:>6} {impl:<20} {res['time_s']:>9.3f} {res['min_time_s']:>8.3f} {res['extra_mb']:>9.1f}  ok")
        else:
            res = rs[-1]
            print(f"{n:>6} {impl:<20} {'-':>9} {'-':>8} {'-':>9}  {res['status']}")
        results[n][impl] = res

    summary = {}
    for n, per_impl in results.items():
        entry = {impl: ({"time_s": round(r["time_s"], 4), "extra_mb": round(r["extra_mb"], 1)}
                        if r["status"] == "ok" else {"status": r["status"]}) for impl, r in per_impl.items()}
        ratios = {}
        pairs = [(PEER_OF[p], p) for p in per_impl if p in PEER_OF]
        if "contrastkit_supcon" in per_impl and "contrastkit_ntxent" in per_impl:
            pairs.append(("contrastkit_supcon", "contrastkit_ntxent"))
        for ours, peer in pairs:
            a, b = per_impl.get(ours), per_impl.get(peer)
            if a and b and a["status"] == "ok":
                if b["status"] == "ok":
                    ratios[f"{ours}/{peer}"] = {
                        "time": round(a["time_s"] / b["time_s"], 3),
                        "extra_mem": round(a["extra_mb"] / b["extra_mb"], 3) if b["extra_mb"] > 0 else None,
                    }
                else:
                    ratios[f"{ours}/{peer}"] = {"peer": b["status"]}
        entry["ratios"] = ratios
        summary[str(n)] = entry
    print(json.dumps({"dim": args.dim, "repeats": args.repeats, "rounds": args.rounds, "cpus": os.cpu_count(),
                      "threads": args.threads or "default",
                      "loadavg_1min_at_end": os.getloadavg()[0], "results": summary}))


if __name__ == "__main__":
    main()
