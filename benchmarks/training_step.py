"""One training step of the state-feedback hybrid: fused recurrence vs plain per-day loop.

Run from the repository root::

    python benchmarks/training_step.py                      # 64 and 512 cells × 365 days
    python benchmarks/training_step.py --cells 64 --repeats 3   # quick look

A step is the forward pass of :class:`h2mv_hybrid.model.networks.HybridH2MV` (the
paper's configuration: states fed back to the LSTM daily, LSTM hidden 100, static
hidden 150, code 12), a loss on ET, runoff, TWS and SWE, and the backward pass,
float32 on the CPU. ``loop`` is the plain per-day implementation (one small tensor op per
equation, autograd records every one); ``fused`` is :class:`FeedbackScan`. Both models
hold the same weights. The two are timed alternately within one process, so that a
noisy machine slows both alike; the table gives the median of the repeats and the ratio
of the medians. The gradients of the two are compared once, as a guard.

Against the upstream research code (zavud/h2mv, MIT): with ``H2MV_REF`` pointing to an
unpacked checkout of it (or ``--upstream PATH``), the script times instead one training
step (forward, loss, backward, Adam) of upstream's per-day hybrid, driven by upstream's own
``LSTM_Dynamic`` and ``FC_Static`` (``models/neural_networks``) and
``run_water_cycle_forward`` (``models/physics/water_cycle``), imported from that path at
run time, against ours in both configurations (state feedback and decoupled, default
settings; and the decoupled one with ``lstm_backend: torch``, i.e. ``nn.LSTM``'s oneDNN
kernels instead of the project's own scan), same shapes, alternately in one process, at
each thread count; and the peak RSS of one step of each in its own process::

    H2MV_REF=/path/to/h2mv python benchmarks/training_step.py --cells 64 512 2048 --threads 1 2

Ratios are upstream's median over ours (above 1: ours is faster). Upstream's step here
leaves out its spin-up pass (it recomputes one every step) and its monthly aggregation;
both sides take the same loss on ET, runoff, TWS and SWE.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from tables import markdown_table


def build(n_cells: int, n_days: int, backend: str = "auto", seed: int = 0,
          state_feedback: bool = True, lstm_backend: str = "auto"):
    """A model with the paper's sizes and a batch of synthetic sites."""
    import torch

    from h2mv_hybrid.model.networks import HybridH2MV, HybridSettings
    from h2mv_hybrid.sites import site_forcing

    f = site_forcing(n_cells, n_days, seed=seed)
    forcing = torch.stack([f["rn"], f["prec"], f["tair"]], -1)
    static = torch.randn(n_cells, 12, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = HybridH2MV(12, [100.0, 2.0, 280.0], [50.0, 5.0, 10.0], [0.0] * 12, [1.0] * 12,
                       HybridSettings(static_hidden=150, code_size=12, lstm_hidden=100,
                                      state_feedback=state_feedback, feedback_backend=backend,
                                      lstm_backend=lstm_backend))
    return model, forcing, static


def loss_of(daily):
    """The benchmark's loss: means of ET, runoff, TWS and SWE."""
    return daily["ET"].mean() + daily["q_total"].mean() + daily["tws"].mean() + \
        daily["swe"].mean()


def step(model, forcing, static) -> None:
    """Forward, loss, backward."""
    model.zero_grad(set_to_none=True)
    loss_of(model(forcing, static).daily).backward()


def compare(n_cells: int, n_days: int, repeats: int) -> dict:
    """Alternate loop and fused steps; medians and their ratio."""
    import torch

    runs = {b: build(n_cells, n_days, b) for b in ("loop", "fused")}
    for model, forcing, static in runs.values():
        step(model, forcing, static)  # warm-up: numba compilation / cache load
    grads = {b: [p.grad.clone() for p in runs[b][0].parameters()] for b in runs}
    worst = max(float((a - b).abs().max() / (b.abs().max() + 1e-12))
                for a, b in zip(grads["fused"], grads["loop"], strict=True))
    times: dict[str, list[float]] = {b: [] for b in runs}
    for _ in range(repeats):
        for b, (model, forcing, static) in runs.items():
            t0 = time.perf_counter()
            step(model, forcing, static)
            times[b].append(time.perf_counter() - t0)
    med = {b: statistics.median(v) for b, v in times.items()}
    return {"cells": n_cells, "days": n_days, "loop_s": med["loop"], "fused_s": med["fused"],
            "speedup": med["loop"] / med["fused"], "grad_rel_diff": worst,
            "threads": torch.get_num_threads()}


def upstream_model(ref: str, n_static: int = 12):
    """Upstream's hybrid in training mode, from its own modules under ``ref``.

    The per-day glue (normalization, state inputs /100, /200, /200, activations, the SM_max
    transform, β as sigmoids of raw parameters) follows ``models/hybrid/hybrid_H2O.py``'s
    ``forward``; the networks and the water cycle are upstream's code, imported from there.
    """
    import importlib

    import torch
    from torch.nn import functional as F  # noqa: N812

    for sub in ("models/physics/water_cycle", "models/neural_networks"):
        path = os.path.join(ref, sub)
        if not os.path.isdir(path):
            raise SystemExit(f"H2MV_REF: expected an unpacked zavud/h2mv checkout with {sub}/, "
                             f"found none under {ref}")
        if path not in sys.path:
            sys.path.insert(0, path)
    wcf = importlib.import_module("water_cycle_forward")
    nets = importlib.import_module("neural_networks")

    class Upstream(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.beta_snow = torch.nn.Parameter(torch.tensor(3.0))
            self.beta_baseflow = torch.nn.Parameter(torch.tensor(-6.0))
            self.fc_static = nets.FC_Static(num_static_input=n_static, num_static_out=1,
                                            hidden_size1=150, hidden_size2=12)
            self.lstm_fc = nets.LSTM_Dynamic(num_features=3 + 12 + 4, num_temporal_outputs=7,
                                             hidden_size_lstm=100)
            self.register_buffer("f_mean", torch.tensor([100.0, 2.0, 280.0]))
            self.register_buffer("f_std", torch.tensor([50.0, 5.0, 10.0]))

        def forward(self, forcing, static):
            n = forcing.shape[0]
            beta_snow, beta_gw = torch.sigmoid(self.beta_snow), torch.sigmoid(self.beta_baseflow)
            code, out_static = self.fc_static(static)
            sm_max = F.softplus(out_static[:, :1] + 100.0) + 1.0
            swe, sm, gw, fapar = (torch.zeros(n, 1) for _ in range(4))
            h = c = torch.zeros(n, 100)
            keep = {"ET": [], "q_total": [], "tws": [], "swe": []}
            for t in range(forcing.shape[1]):
                f = forcing[:, t]
                x = torch.cat(((f - self.f_mean) / self.f_std, code, swe / 100, sm / 200,
                               gw / 200, fapar), 1)
                h, c, o = self.lstm_fc(x, h, c)
                fapar = torch.sigmoid(o[:, 6:7])
                w = wcf.run_water_cycle_forward({
                    "tair_t": f[:, 2:3], "prec_t": f[:, 1:2], "rn_t": f[:, 0:1],
                    "swe_t_prev": swe, "SM_t_prev": sm, "GW_t_prev": gw,
                    "alpha_snow_melt_t": F.softplus(o[:, 0:1]),
                    "alpha_Ei_t": F.softplus(o[:, 1:2]),
                    "alpha_Es_t": torch.sigmoid(o[:, 2:3]), "alpha_T_t": torch.sigmoid(o[:, 3:4]),
                    "alpha_r_soil_t": torch.sigmoid(o[:, 4:5]),
                    "alpha_r_gw_t": torch.sigmoid(o[:, 5:6]), "fAPAR_nn_t": fapar,
                    "SM_max_nn": sm_max, "beta_snow": beta_snow, "beta_baseflow": beta_gw})
                swe, sm, gw = w["swe_t"], w["SM_t"], w["GW_t"]
                for k, name in (("ET", "ET_t"), ("q_total", "runoff_total_t"), ("tws", "tws_t"),
                                ("swe", "swe_t")):
                    keep[k].append(w[name])
            return {k: torch.cat(v, 1) for k, v in keep.items()}

    return Upstream()


def build_impl(impl: str, n_cells: int, n_days: int, ref: str | None, seed: int = 0):
    """One training step (forward, loss, backward, Adam) of one implementation at one size."""
    import torch

    model, forcing, static = build(n_cells, n_days, seed=seed,
                                   state_feedback=impl == "state feedback",
                                   lstm_backend="torch" if impl == ONEDNN else "auto")
    if impl == "upstream":
        torch.manual_seed(seed)
        model = upstream_model(ref)

        def outputs():
            return model(forcing, static)
    else:
        def outputs():
            return model(forcing, static).daily
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        loss_of(outputs()).backward()
        opt.step()

    return one


#: The decoupled configuration with ``nn.LSTM`` (oneDNN) instead of the project's scan.
ONEDNN = "decoupled, nn.LSTM"
IMPLS = ("upstream", "state feedback", "decoupled", ONEDNN)


def set_threads(n: int) -> None:
    """Set the thread pools of torch and numba."""
    import numba
    import torch

    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def peak_rss(impl: str, n_cells: int, n_days: int, ref: str | None) -> float:
    """Peak RSS (MiB) of one step of ``impl`` in a fresh process, over its RSS before."""
    cmd = [sys.executable, __file__, "--rss-child", impl, str(n_cells), str(n_days)]
    env = dict(os.environ, H2MV_REF=ref or "")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return float(out.stdout.strip().splitlines()[-1])


def rss_child(impl: str, n_cells: int, n_days: int, ref: str | None) -> None:
    """Print the peak RSS growth of one step (after a small warm-up step)."""
    set_threads(1)
    build_impl(impl, 4, 10, ref)()  # numba: compile / load its cache
    one = build_impl(impl, n_cells, n_days, ref)
    with open("/proc/self/statm") as fh:
        base = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    one()
    # VmHWM, not getrusage's ru_maxrss: the latter survives exec, so a child would report
    # its parent's high-water mark
    with open("/proc/self/status") as fh:
        hwm_kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    print(hwm_kib / 1024 - base / 2**20)


def against_upstream(cells: list[int], n_days: int, repeats: int, threads: list[int],
                     ref: str, memory: bool) -> list[dict]:
    """Alternate upstream and our two configurations; medians, ratios, peak RSS."""
    rows = []
    for n_threads in threads:
        set_threads(n_threads)
        for n in cells:
            steps = {i: build_impl(i, n, n_days, ref) for i in IMPLS}
            for one in steps.values():
                one()  # warm-up
            times: dict[str, list[float]] = {i: [] for i in IMPLS}
            for _ in range(repeats):
                for i, one in steps.items():
                    t0 = time.perf_counter()
                    one()
                    times[i].append(time.perf_counter() - t0)
            med = {i: statistics.median(v) for i, v in times.items()}
            row = {"threads": n_threads, "cells": n, "days": n_days,
                   **{f"{i}_s": med[i] for i in IMPLS},
                   "feedback_ratio": med["upstream"] / med["state feedback"],
                   "decoupled_ratio": med["upstream"] / med["decoupled"],
                   "onednn_ratio": med["upstream"] / med[ONEDNN],
                   "load": os.getloadavg()[0]}
            rows.append(row)
            print(f"  {n_threads} thread(s), {n} cells × {n_days} days: upstream "
                  f"{med['upstream']:.3f} s, state feedback {med['state feedback']:.3f} s "
                  f"({row['feedback_ratio']:.2f}×), decoupled {med['decoupled']:.3f} s "
                  f"({row['decoupled_ratio']:.2f}×), with nn.LSTM {med[ONEDNN]:.3f} s "
                  f"({row['onednn_ratio']:.2f}×), load {row['load']:.1f}", flush=True)
    print(f"\none training step (forward, loss, backward, Adam), LSTM hidden 100, float32, "
          f"{n_days} days, median of {repeats}, alternated; ratio = upstream / ours")
    print(markdown_table(
        ["threads", "cells", "upstream s", "state feedback s", "ratio", "decoupled s", "ratio",
         "decoupled, nn.LSTM s", "ratio", "load"],
        [[r["threads"], r["cells"], f"{r['upstream_s']:.3f}", f"{r['state feedback_s']:.3f}",
          f"{r['feedback_ratio']:.2f}×", f"{r['decoupled_s']:.3f}",
          f"{r['decoupled_ratio']:.2f}×", f"{r[ONEDNN + '_s']:.3f}",
          f"{r['onednn_ratio']:.2f}×", f"{r['load']:.1f}"] for r in rows]))
    if memory:
        print(f"\npeak RSS of one step (MiB over the process before it, 1 thread), "
              f"{n_days} days")
        peaks = [[n, *(f"{peak_rss(i, n, n_days, ref):.0f}" for i in IMPLS)] for n in cells]
        print(markdown_table(["cells", *IMPLS], peaks))
    return rows


def main() -> None:
    """Print one row per size, and a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--upstream", default=os.environ.get("H2MV_REF") or None,
                        help="unpacked zavud/h2mv checkout (default: $H2MV_REF)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts of the upstream comparison")
    parser.add_argument("--no-memory", action="store_true",
                        help="upstream comparison: skip the peak RSS of each step")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        impl, n_cells, n_days = args.rss_child
        rss_child(impl, int(n_cells), int(n_days), args.upstream)
        return
    if args.upstream:
        rows = against_upstream(args.cells, args.days, args.repeats, args.threads,
                                args.upstream, not args.no_memory)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        return
    rows = []
    for n in args.cells:
        r = compare(n, args.days, args.repeats)
        rows.append(r)
        print(f"  {n} cells × {args.days} days: loop {r['loop_s']:.3f} s, fused "
              f"{r['fused_s']:.3f} s, {r['speedup']:.2f}× (gradients agree to "
              f"{r['grad_rel_diff']:.1e} relative)", flush=True)
    print(f"\none training step (forward + backward), state feedback, LSTM hidden 100, float32, "
          f"{rows[0]['threads']} threads, median of {args.repeats}")
    print("| cells × days | per-day loop s | fused s | speed-up |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cells']} × {r['days']} | {r['loop_s']:.3f} | {r['fused_s']:.3f} | "
              f"{r['speedup']:.2f}× |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
