"""GPU throughput: the Triton kernels against the per-day loop on the same GPU.

Run from the repository root on a machine with a CUDA GPU (``benchmarks/gpu_check.sh``
runs it)::

    python benchmarks/gpu_throughput.py
    python benchmarks/gpu_throughput.py --scan-cells 2048 --step-cells 512 --repeats 3

Two tables, float32, medians of the repeats after one warm-up (Triton compilation):

- the bucket scan (:func:`process_layers.h2mv.simulate`), forward + backward of a loss
  on ET, runoff and TWS, in cell-days per second: the Triton kernel at each size, the
  per-day loop at the smallest;
- one training step of :class:`h2mv_hybrid.model.networks.HybridH2MV` (the paper's sizes:
  LSTM hidden 100, static hidden 150, code 12; forward, loss, backward) for both
  configurations, the fused Triton op against the per-day loop (``feedback_backend:
  loop``; for the decoupled configuration the bucket's loop), alternated, with the
  ratio and the peak GPU memory of each.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time


def _sync():
    import torch

    torch.cuda.synchronize()


def scan_case(n_cells: int, n_days: int):
    """Forcing, activated α, SM_max, β and states of synthetic sites on the GPU (float32)."""
    import torch

    from h2mv_hybrid.sites import site_coefficients, site_forcing
    from process_layers.parameters import ALPHA_NAMES

    forcing = site_forcing(min(n_cells, 4096), n_days, seed=0)
    reps = -(-n_cells // min(n_cells, 4096))  # tile the sites to the size asked for
    forcing = {k: v.repeat(reps, 1)[:n_cells].cuda() for k, v in forcing.items()}
    g = torch.Generator(device="cuda").manual_seed(0)
    alpha = {k: torch.rand(n_cells, n_days, device="cuda", generator=g) for k in ALPHA_NAMES}
    alpha["snow_melt"] *= 5
    alpha["Ei"] *= 3
    _, static, beta = site_coefficients({k: v[:1].cpu() for k, v in forcing.items()}, seed=0)
    static = {"sm_max": static["sm_max"].float().cuda().expand(n_cells).contiguous()}
    beta = {k: v.float().cuda() for k, v in beta.items()}
    return forcing, alpha, static, beta


def scan_seconds(case, backend: str) -> float:
    """Seconds of one forward + backward of the bucket over the whole series."""
    import torch

    from process_layers import h2mv

    forcing, alpha, static, beta = case
    alpha = {k: v.requires_grad_() for k, v in alpha.items()}
    _sync()
    t0 = time.perf_counter()
    f = h2mv.simulate(forcing, alpha, static, beta, backend=backend, validate_inputs=False)
    loss = f.ET.mean() + f.q_total.mean() + f.tws.mean()
    torch.autograd.grad(loss, list(alpha.values()))
    _sync()
    return time.perf_counter() - t0


@contextlib.contextmanager
def bucket_loop():
    """The decoupled configuration's bucket on the per-day loop (as without Triton)."""
    from process_layers import h2mv

    saved = h2mv.fused_available
    h2mv.fused_available = lambda forcing, alpha: "benchmark: the per-day loop"
    try:
        yield
    finally:
        h2mv.fused_available = saved


def step_case(n_cells: int, n_days: int, feedback: bool, backend: str):
    """A model with the paper's sizes and a batch of synthetic sites on the GPU."""
    import torch

    from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings
    from h2mv_hybrid.sites import site_forcing

    f = site_forcing(n_cells, n_days, seed=0)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1).cuda()
    static = torch.randn(n_cells, 12, generator=torch.Generator().manual_seed(0)).cuda()
    torch.manual_seed(0)
    model = HybridH2MV(12, [100.0, 2.0, 280.0], [50.0, 5.0, 10.0], [0.0] * 12, [1.0] * 12,
                       HybridSettings(state_feedback=feedback, feedback_backend=backend))
    return model.cuda(), forcing, static


def step_seconds(model, forcing, static, loop_bucket: bool) -> float:
    """Seconds of one forward + loss + backward."""
    import torch

    _sync()
    t0 = time.perf_counter()
    with bucket_loop() if loop_bucket else contextlib.nullcontext():
        model.zero_grad(set_to_none=True)
        d = model(forcing, static).daily
        (d["ET"].mean() + d["q_total"].mean() + d["tws"].mean() + d["swe"].mean()).backward()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def peak_gib(fn) -> float:
    """Peak GPU memory (GiB) of one call of ``fn``."""
    import torch

    torch.cuda.reset_peak_memory_stats()
    fn()
    return torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    """Print both tables (markdown)."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scan-cells", type=int, nargs="*", default=[2048, 65536])
    parser.add_argument("--scan-days", type=int, default=3650)
    parser.add_argument("--step-cells", type=int, nargs="+", default=[512, 2048, 16384])
    parser.add_argument("--step-days", type=int, default=365)
    parser.add_argument("--configurations", nargs="+", default=["feedback", "decoupled"],
                        choices=["feedback", "decoupled"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")

    print("\n| bucket scan, fwd + bwd | cells × days | s | cell-days / s | peak GiB |")
    print("|---|---|---:|---:|---:|")
    for i, n in enumerate(args.scan_cells):
        case = scan_case(n, args.scan_days)
        for backend in ("fused", "loop") if i == 0 else ("fused",):
            scan_seconds(case, backend)  # warm-up
            secs = statistics.median(scan_seconds(case, backend)
                                     for _ in range(args.repeats if backend == "fused" else 1))
            gib = peak_gib(lambda b=backend, c=case: scan_seconds(c, b))
            name = "Triton kernel" if backend == "fused" else "per-day loop"
            print(f"| {name} | {n} × {args.scan_days} | {secs:.3f} | "
                  f"{n * args.scan_days / secs:.3g} | {gib:.1f} |", flush=True)
        del case
        torch.cuda.empty_cache()

    print("\n| training step | cells × days | fused s | loop s | fused / loop speed-up "
          "| fused peak GiB | loop peak GiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for feedback in (c == "feedback" for c in args.configurations):
        for n in args.step_cells:
            fused = step_case(n, args.step_days, feedback, "auto")
            loop = step_case(n, args.step_days, feedback, "loop")
            runs = {"fused": (fused, False), "loop": (loop, not feedback)}
            for r, lb in runs.values():
                step_seconds(*r, lb)  # warm-up
            times: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(args.repeats):
                for k, (r, lb) in runs.items():
                    times[k].append(step_seconds(*r, lb))
            peaks = {k: peak_gib(lambda r=r, lb=lb: step_seconds(*r, lb))
                     for k, (r, lb) in runs.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            name = "state feedback" if feedback else "decoupled"
            print(f"| {name} | {n} × {args.step_days} | {med['fused']:.3f} | {med['loop']:.3f} "
                  f"| {med['loop'] / med['fused']:.1f}× | {peaks['fused']:.2f} "
                  f"| {peaks['loop']:.2f} |", flush=True)
            del fused, loop, runs
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
