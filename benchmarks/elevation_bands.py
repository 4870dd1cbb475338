"""What elevation bands cost: one training step of the catchment hybrid with K bands.

Run from the repository root::

    python benchmarks/elevation_bands.py                 # K = 1, 3, 5; 16 basins × 365 days
    python benchmarks/elevation_bands.py --bands 1 5 10 --cells 64 --repeats 9
    python benchmarks/elevation_bands.py --bands 1 5 --configurations decoupled fused loop

A step is the forward pass of the hybrid with the networks and options of
``experiments/camels_temporal.yaml`` (static 64 → code 8, LSTM 64, 30-day routing,
per-basin recession and forcing corrections), a loss on the routed runoff, and the
backward pass, float32 on the CPU, on one training window (warm-up states given). The
configurations: ``decoupled`` (the config's), ``fused`` (state feedback, the fused op)
and ``loop`` (state feedback, the per-day autograd loop). Every model is timed
alternately in one process, so that a noisy machine slows them alike; the table gives
the median of the repeats and its ratio to the first row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from tables import markdown_table

#: Settings of each configuration beside the catchment config's.
CONFIGURATIONS = {
    "decoupled": {"state_feedback": False},
    "fused": {"state_feedback": True, "feedback_backend": "fused"},
    "loop": {"state_feedback": True, "feedback_backend": "loop"},
}


def build(n_cells: int, n_days: int, bands: int, configuration: str = "decoupled"):
    """The catchment config's networks with ``bands`` elevation bands, and a batch."""
    import torch

    from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings
    from h2mv_hybrid.sites import site_forcing

    f = site_forcing(n_cells, n_days, seed=0)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1)
    static = torch.randn(n_cells, 29, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = HybridH2MV(29, [100.0, 2.0, 280.0], [50.0, 5.0, 10.0], [0.0] * 29, [1.0] * 29,
                       HybridSettings(static_hidden=64, code_size=8, lstm_hidden=64,
                                      **CONFIGURATIONS[configuration], routing_days=30,
                                      basin_baseflow=True, basin_precip_factor=True,
                                      basin_temperature_offset=True, elevation_bands=bands))
    return model, forcing, static


def step(model, forcing, static) -> float:
    """Seconds of one forward + backward pass."""
    t0 = time.perf_counter()
    out = model(forcing, static)
    out.daily["q_routed"].square().mean().backward()
    return time.perf_counter() - t0


def main() -> None:
    """Time the steps alternately, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bands", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configurations", nargs="+", default=["decoupled"],
                        choices=sorted(CONFIGURATIONS))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cases = [(c, k) for c in args.configurations for k in args.bands]
    runs = {case: build(args.cells, args.days, case[1], case[0]) for case in cases}
    times: dict[tuple, list[float]] = {case: [] for case in cases}
    for case in cases:  # warm-up: numba compiles, oneDNN picks its kernels
        step(*runs[case])
    for _ in range(args.repeats):
        for case in cases:
            times[case].append(step(*runs[case]))
    base = statistics.median(times[cases[0]])
    rows = [[c, k, f"{1e3 * statistics.median(times[(c, k)]):.1f}",
             f"{statistics.median(times[(c, k)]) / base:.2f}"] for c, k in cases]
    print(f"{args.cells} basins × {args.days} days, {args.threads} thread(s), median of "
          f"{args.repeats}; load average {os.getloadavg()[0]:.2f}")
    print(markdown_table(["configuration", "bands", "step (ms)", "× first row"], rows))


if __name__ == "__main__":
    main()
