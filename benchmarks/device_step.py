"""One training step of the hybrid on each device here: CPU (numba) and CUDA (Triton).

Run from the repository root::

    python benchmarks/device_step.py                    # 512 cells × 365 days
    python benchmarks/device_step.py --cells 64 2048 --days 365 --repeats 5

A step is the forward pass of :class:`h2mv_hybrid.model.networks.HybridH2MV` (LSTM hidden
100, static hidden 150, code 12), a loss on ET, runoff, TWS and SWE and the backward pass,
in float32, for both configurations: state feedback (the paper's; on the CPU the fused
op, on a GPU the Triton op) and decoupled (whole-sequence LSTM, then the bucket).
Devices are timed alternately, in one process; on CUDA every step ends with a
synchronization. The table gives the median of the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time


def build(n_cells: int, n_days: int, feedback: bool, device: str, seed: int = 0):
    """A model with the paper's sizes and a batch of synthetic sites on ``device``."""
    import torch

    from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings
    from h2mv_hybrid.sites import site_forcing

    f = site_forcing(n_cells, n_days, seed=seed)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1)
    static = torch.randn(n_cells, 12, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = HybridH2MV(12, [100.0, 2.0, 280.0], [50.0, 5.0, 10.0], [0.0] * 12, [1.0] * 12,
                       HybridSettings(state_feedback=feedback))
    return model.to(device), forcing.to(device), static.to(device)


def step(model, forcing, static) -> float:
    """Seconds of one forward + loss + backward."""
    import torch

    cuda = forcing.device.type == "cuda"
    t0 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    d = model(forcing, static).daily
    (d["ET"].mean() + d["q_total"].mean() + d["tws"].mean() + d["swe"].mean()).backward()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    """Print a markdown table: configuration, cells, seconds per step on each device."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[512])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    print(f"devices: cpu ({torch.get_num_threads()} threads)"
          + (f", cuda ({torch.cuda.get_device_name()})" if len(devices) > 1 else ""))
    print("| configuration | cells × days | " + " | ".join(f"{d} s" for d in devices) + " |")
    print("|---|---|" + "---:|" * len(devices))
    for feedback in (True, False):
        for n in args.cells:
            runs = {d: build(n, args.days, feedback, d) for d in devices}
            for r in runs.values():
                step(*r)  # warm-up: numba compilation / cache, CUDA context and kernels
            times: dict[str, list[float]] = {d: [] for d in devices}
            for _ in range(args.repeats):
                for d, r in runs.items():
                    times[d].append(step(*r))
            name = "state feedback" if feedback else "decoupled"
            cells = " | ".join(f"{statistics.median(times[d]):.3f}" for d in devices)
            print(f"| {name} | {n} × {args.days} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
