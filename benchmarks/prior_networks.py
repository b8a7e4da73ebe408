"""Which denoiser network, and which training choices, learn what the Gaussian misses at equal CPU minutes.

Each row is the correction of a ``"wiener"`` prior on the same fitted Gaussian (the benchmark's
``out/gaussian``, see ``--base-out``) and trains for the same wall-clock minutes with the same loop
(AdamW, 100-step warm-up, gradient clip 1, EMA 0.999; by default times uniform in
log(sigma / alpha) on [1e-3, 1] and EDM loss weights). Both the EMA weights and the raw
(non-EMA) weights are scored on held-out signals by their denoising error relative to the Wiener
denoiser on the 12-point log grid of t in [0.005, 0.7] that ``prior_quality.py`` uses (one seeded
noise draw per signal and t, the same for every row and both weights): the EMA question costs no
extra run.

A ``--networks`` entry is ``name[:key=value,...][@option=value,...]``: the network (``graph``,
``unet``, ``mlp``) with keyword arguments of :func:`~manifold_ps.priors.build_prior`, then the
training options ``time`` (``log_snr``, ``uniform`` or ``edm``: the ``time_sampling`` of
:meth:`~manifold_ps.priors.DiffusionPrior.dsm_loss`) and ``weighting`` (``edm`` or ``elbo``, the
likelihood weighting; it needs ``time=log_snr``). ``--batch`` gives each entry its batch size.

The denoiser networks (``prior_networks-bunny_mnist-cpu``):

    python benchmarks/prior_networks.py --workload bunny-mnist --minutes 5 \\
        --networks graph:hidden=32,depth=2 unet mlp:hidden=1024,depth=3 --batch 16 16 64

The training choices of the graph network -- time sampling, loss weighting, batch size versus
steps, and (from the raw-weight column) EMA (``prior_training``). ``--steps`` trains each row for
exactly that many steps instead of ``--minutes``: rows of one network at one batch size then do
equal work whatever else runs on the CPU (the batch-64 row gets a quarter of the steps, the same
number of training signals):

    python benchmarks/prior_networks.py --workload bunny-mnist --table-name prior_training \\
        --networks graph:hidden=32,depth=2 graph:hidden=32,depth=2@time=edm \\
        graph:hidden=32,depth=2@time=uniform graph:hidden=32,depth=2@weighting=elbo graph:hidden=32,depth=2 \\
        --batch 16 16 16 16 64 --steps 1000 1000 1000 1000 250 --base-out runs/bunny_v3 --out runs/prior_training-bunny

Rows resume from ``--out/<row>.json``, whose name holds the network, the training options other
than the defaults and the batch size (``graph_hidden32_depth2@time-edm_batch16.json``), so no two
rows share a file (a row file trained for another budget is refused, not mixed in); the table
goes to ``--out/<table-name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from manifold_ps.benchmarking.baselines import stage_gaussian
from manifold_ps.benchmarking.workloads import WORKLOADS
from manifold_ps.config import add_config_arguments, config_from_args
from manifold_ps.priors import DiffusionPrior, build_prior

GRID = torch.logspace(math.log10(0.005), math.log10(0.7), 12)
"""The times of the denoising comparison (as in ``prior_quality.py``)."""


TIMES = ("log_snr", "uniform", "edm")
"""Values of the ``time`` training option (the ``time_sampling`` of ``dsm_loss``)."""
WEIGHTINGS = ("edm", "elbo")
"""Values of the ``weighting`` training option."""
DEFAULT_OPTIONS = {"time": "log_snr", "weighting": "edm"}
"""The training options of an entry without ``@`` (the loop's defaults before the options existed)."""
TITLES = {"prior_networks": "Denoiser networks at equal CPU minutes",
          "prior_training": "Prior training choices at equal CPU minutes"}
"""Table titles by ``--table-name`` (another name is its own title)."""


def parse_network(spec: str) -> tuple[str, dict[str, Any]]:
    """``"graph:hidden=32,depth=2"`` -> ``("graph", {"hidden": 32, "depth": 2})``."""
    name, _, rest = spec.partition(":")
    kwargs = {k: int(v) if v.lstrip("-").isdigit() else float(v) for k, v in
              (item.split("=") for item in rest.split(",") if item)}
    return name, kwargs


def parse_spec(spec: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """``"graph:hidden=32@time=edm"`` -> ``("graph", {"hidden": 32}, {"time": "edm", "weighting": "edm"})``.

    Raises:
        ValueError: an unknown option or value, or ``weighting=elbo`` with other times than ``log_snr``.
    """
    network, _, rest = spec.partition("@")
    name, kwargs = parse_network(network)
    options = dict(DEFAULT_OPTIONS)
    for item in (i for i in rest.split(",") if i):
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            raise ValueError(f"{spec}: training options are time=... and weighting=..., got {item!r}")
        choices = TIMES if key == "time" else WEIGHTINGS
        if value not in choices:
            raise ValueError(f"{spec}: {key} must be one of {list(choices)}, got {value!r}")
        options[key] = value
    if options["weighting"] == "elbo" and options["time"] != "log_snr":
        raise ValueError(f"{spec}: weighting=elbo is the likelihood weighting for the ELBO's times: "
                         "it needs time=log_snr")
    return name, kwargs, options


def row_file_name(spec: str, batch: int) -> str:
    """The row's file: the network, the training options other than the defaults, the batch.

    Example: ``row_file_name("graph:hidden=32,depth=2@time=edm", 16) == "graph_hidden32_depth2@time-edm_batch16.json"``.
    """
    network = spec.partition("@")[0]
    _, _, options = parse_spec(spec)
    stem = network.replace(":", "_").replace(",", "_").replace("=", "")
    changed = [f"{k}-{v}" for k, v in options.items() if v != DEFAULT_OPTIONS[k]]
    return stem + ("@" + "_".join(changed) if changed else "") + f"_batch{batch}.json"


def _score(models: dict[str, DiffusionPrior], gaussian, held: torch.Tensor) -> dict[str, list[dict[str, float]]]:
    """Denoising MSE of each model relative to the Wiener denoiser on ``GRID`` (one noise draw for all)."""
    noise_gen = torch.Generator().manual_seed(123)
    sde = next(iter(models.values())).sde
    rows: dict[str, list[dict[str, float]]] = {key: [] for key in models}
    with torch.no_grad():
        for t in GRID:
            tt = torch.full((held.shape[0],), float(t))
            noise = torch.randn(held.shape, generator=noise_gen)
            xt = sde.alpha(tt)[:, None, None] * held + sde.std(tt)[:, None, None] * noise
            wiener = gaussian.denoise(xt.double(), tt.double()).float()
            mse_w = (wiener - held).square().mean()
            for key, model in models.items():
                learned = torch.cat([model.denoise(c, ct) for c, ct in zip(xt.split(64), tt.split(64))])
                mse = (learned - held).square().mean()
                rows[key].append({"t": float(t), "mse": float(mse), "mse_wiener": float(mse_w),
                                  "ratio": float(mse / mse_w)})
    return rows


def _mean_small(rows: list[dict[str, float]]) -> float:
    small = [r["ratio"] for r in rows if r["t"] <= 0.3]
    return sum(small) / len(small)


def train_and_score(workload, gaussian, spec: str, batch: int, minutes: float | None, lr: float, held: torch.Tensor,
                    seed: int, steps: int | None = None) -> dict[str, Any]:
    """Train one entry's correction for ``minutes`` (or exactly ``steps`` steps, whatever the CPU's
    load); score its EMA and its raw weights on ``held``."""
    name, kwargs, options = parse_spec(spec)
    torch.manual_seed(seed)
    prior = build_prior(workload.geometry, channels=workload.channels, preset="cpu", network=name,  # type: ignore[arg-type]
                        parameterization="wiener", gaussian=gaussian, **kwargs)
    ema = copy.deepcopy(prior).requires_grad_(False)
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed + 1)
    x = workload.prior_train
    tic, step = time.perf_counter(), 0
    while (step < steps) if steps is not None else (time.perf_counter() - tic < 60 * minutes):
        index = torch.randint(0, x.shape[0], (batch,), generator=gen)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        loss = prior.dsm_loss(x[index], gen, time_sampling=options["time"],  # type: ignore[arg-type]
                              weighting=options["weighting"]).mean()  # type: ignore[arg-type]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for pe, pp in zip(ema.parameters(), prior.parameters()):
                pe.lerp_(pp, 1 - decay)
        step += 1
    seconds = time.perf_counter() - tic
    grids = _score({"ema": ema.eval(), "raw": prior.eval()}, gaussian, held)
    rows, raw = grids["ema"], grids["raw"]
    return {"network": spec.partition("@")[0], "spec": spec, "time_sampling": options["time"],
            "weighting": options["weighting"], "batch": batch, "minutes": None if steps is not None else minutes,
            "step_budget": steps, "steps": step, "seconds": seconds,
            "parameters": sum(p.numel() for p in prior.parameters()), "grid": rows,
            "mean_ratio_t_le_0.3": _mean_small(rows), "max_ratio": max(r["ratio"] for r in rows),
            "grid_raw": raw, "mean_ratio_t_le_0.3_raw": _mean_small(raw)}


def _budget(row: dict[str, Any]) -> str:
    return f"{row['step_budget']} steps" if row.get("step_budget") is not None else f"{row['minutes']:g} min"


def write_table(rows: list[dict[str, Any]], out: Path, workload: str, threads: int, *,
                table_name: str = "prior_networks", title: str | None = None) -> None:
    """Write ``out/<table_name>.{md,json}`` (and print the markdown)."""
    title = title or TITLES.get(table_name, table_name)
    lines = [f"# {title}, {workload}", "",
             f"Correction of a `wiener` prior on the same Gaussian; {threads} thread(s); held-out signals. "
             "Denoising MSE relative to the Wiener denoiser (below 1: the network learned something), "
             "of the EMA weights unless marked raw.", "",
             "| network | times | weighting | batch | parameters | budget | minutes taken | steps | "
             "mean ratio, t <= 0.3 | mean ratio t<=0.3 (raw weights) | ratio at t = 0.005 | max ratio |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r.get('time_sampling', 'log_snr')} | {r.get('weighting', 'edm')} | "
                     f"{r['batch']} | {r['parameters'] / 1e6:.2f}M | {_budget(r)} | {r['seconds'] / 60:.1f} | "
                     f"{r['steps']} | "
                     f"{r['mean_ratio_t_le_0.3']:.3f} | "
                     + (f"{r['mean_ratio_t_le_0.3_raw']:.3f}" if "mean_ratio_t_le_0.3_raw" in r else "-")
                     + f" | {r['grid'][0]['ratio']:.3f} | {r['max_ratio']:.3f} |")
    (out / f"{table_name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{table_name}.json").write_text(json.dumps({"workload": workload, "threads": threads, "title": title,
                                                        "rows": rows}, indent=1))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) every row and write the table; returns the table's JSON document."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=("bunny-mnist", "era5-imputation"), default="bunny-mnist")
    add_config_arguments(p)
    p.add_argument("--networks", nargs="+", default=["graph:hidden=32,depth=2", "unet", "mlp:hidden=1024,depth=3"],
                   help="name[:key=value,...][@time=...,weighting=...] per row (see the module docstring)")
    p.add_argument("--batch", type=int, nargs="+", default=[16, 16, 64], help="batch size of each row")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="train each row for exactly this many steps instead of --minutes (one value, or one per "
                        "row): equal work whatever else runs on the CPU")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--heldout", type=int, default=256)
    p.add_argument("--base-out", type=Path, default=None,
                   help="the benchmark's folder whose out/gaussian is used (default runs/<script>)")
    p.add_argument("--out", type=Path, default=None, help="default runs/<table-name>-<script>")
    p.add_argument("--table-name", default="prior_networks", help="the table's files: OUT/<table-name>.{md,json}")
    p.add_argument("--title", default=None, help="the table's title (default: from --table-name)")
    args = p.parse_args(argv)
    if len(args.batch) != len(args.networks):
        p.error("give one --batch per network")
    if args.steps is not None and len(args.steps) not in (1, len(args.networks)):
        p.error("give one --steps, or one per network")
    steps = [None] * len(args.networks) if args.steps is None else \
        (args.steps * len(args.networks) if len(args.steps) == 1 else args.steps)
    for spec in args.networks:
        try:
            parse_spec(spec)
        except ValueError as err:  # before any minute is spent
            p.error(str(err))
    config = config_from_args(args)
    script = args.workload.replace("-", "_")
    out = args.out or Path("runs") / f"{args.table_name}-{script}"
    out.mkdir(parents=True, exist_ok=True)
    workload = WORKLOADS[args.workload](config)
    gaussian = stage_gaussian(workload, config, args.base_out or Path("runs") / script, device=torch.device("cpu"))
    held = workload.flow_train[: args.heldout] if args.workload == "bunny-mnist" else workload.eval_sets[0].x
    rows = []
    for spec, batch, budget in zip(args.networks, args.batch, steps):
        path = out / row_file_name(spec, batch)
        minutes = None if budget is not None else args.minutes
        if path.is_file():
            row = json.loads(path.read_text())
            if (row.get("minutes"), row.get("step_budget")) != (minutes, budget):
                raise ValueError(f"{path} was trained for {_budget(row)}, this run asks "
                                 f"{_budget({'minutes': minutes, 'step_budget': budget})}: delete it or use another --out")
            rows.append(row)
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {spec}, batch {batch}, "
              f"{_budget({'minutes': minutes, 'step_budget': budget})}", flush=True)
        row = train_and_score(workload, gaussian, spec, batch, minutes, args.lr, held.float(), config.seed,
                              steps=budget)
        path.write_text(json.dumps(row, indent=1))
        rows.append(row)
    write_table(rows, out, args.workload, torch.get_num_threads(), table_name=args.table_name, title=args.title)
    return json.loads((out / f"{args.table_name}.json").read_text())


if __name__ == "__main__":
    main()
