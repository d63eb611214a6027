"""Issue-5 benchmark: self-supervised pre-training on long-tailed data, then the two-stage recipe
(pre-train, then fine-tune with an imbalance- and noise-resistant loss) under label noise.

Usage:
    python scripts/bench_ssl.py [--part all|pretrain|finetune|cost] [--seeds 0 1 2]
        [--out runs/bench-ssl] [--quick] [--data fashion_mnist] [--jobs 1] [...]

What each part runs and measures, the caching of finished runs in ``OUT`` and the budget of the
defaults: `noisytail.benchmarks.ssl`. This script maps its flags onto `SslOptions` (same names,
same defaults) and prints the tables; ``--estimate`` prints the extrapolated wall time of the plan
instead (run it first, on the machine and load the benchmark will see).

The budget grid (issue 15): ``--grid configs/bench/budget_ssl_fmnist.yaml --out FOLDER`` runs
every cell of the grid file (`noisytail.benchmarks.ssl_budget`; the file sets the options, the
other flags are not used), resumably; with ``--estimate`` it prints each cell's extrapolated wall
time instead, with ``--quick`` it is a smoke run of the grid. Its gaps:
``scripts/plot_budget.py FOLDER --kind mttv`` and ``--kind two-stage``.
Not a test: its figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from noisytail.benchmarks.ssl import estimate, run_bench
from noisytail.benchmarks.ssl_budget import estimate_grid, load_ssl_grid, run_ssl_grid
from noisytail.benchmarks.ssl_options import SSL_METHODS, SslOptions

D = SslOptions()  # the defaults


def parse_args(argv: list[str] | None = None) -> tuple[SslOptions, bool, str | None, bool]:
    """The options of the command line, whether ``--estimate`` was given, ``--grid`` and
    whether ``--quick`` was given."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", help="A budget grid file: run its cells into --out (required).")
    p.add_argument("--part", choices=["all", "pretrain", "finetune", "cost"], default=D.part)
    p.add_argument("--seeds", type=int, nargs="+", default=list(D.seeds))
    p.add_argument("--out", default=D.out)
    p.add_argument("--quick", action="store_true", help="A smoke run of seconds.")
    p.add_argument("--data", default=D.data)
    p.add_argument("--pool", type=int, default=D.pool, help="Training images before imbalance.")
    p.add_argument("--test-subset", type=int, default=D.test_subset)
    p.add_argument("--ratio", type=float, default=D.ratio)
    p.add_argument("--width", type=int, default=D.width, help="small_cnn width (features = 2x).")
    p.add_argument("--device", default=D.device)
    p.add_argument("--threads", type=int, default=D.threads, help="torch threads per process.")
    p.add_argument("--jobs", type=int, default=D.jobs, help="Runs in parallel (processes).")
    p.add_argument(
        "--estimate", action="store_true", help="Time a few steps, print the plan's wall time."
    )
    # pre-training
    p.add_argument("--methods", nargs="+", default=list(D.methods), choices=SSL_METHODS)
    p.add_argument(
        "--pretrain-epochs", type=int, default=D.pretrain_epochs, help="SimCLR's (2-view) epochs."
    )
    p.add_argument("--views", type=int, default=D.views, help="k of the k-view method.")
    p.add_argument("--ssl-batch", type=int, default=D.ssl_batch)
    p.add_argument("--ssl-lr", type=float, default=D.ssl_lr)
    p.add_argument(
        "--mttv-partner",
        choices=["dataset", "batch"],
        default=D.mttv_partner,
        help="MTTV's partner draw (the official code: dataset).",
    )
    p.add_argument(
        "--mttv-loss",
        choices=["clean", "official", "mean_log"],
        default=D.mttv_loss,
        help="MTTV's loss form (docs/methods.md, MTTV).",
    )
    p.add_argument("--probe-per-class", type=int, default=D.probe_per_class)
    p.add_argument("--probe-epochs", type=int, default=D.probe_epochs)
    # fine-tuning
    p.add_argument("--noise-rates", type=float, nargs="+", default=list(D.noise_rates))
    p.add_argument("--losses", nargs="+", default=list(D.losses))
    p.add_argument("--scratch-losses", nargs="+", default=list(D.scratch_losses))
    p.add_argument("--init-from", default=D.init_from, choices=SSL_METHODS)
    p.add_argument("--finetune-epochs", type=int, default=D.finetune_epochs)
    p.add_argument("--freeze-epochs", type=int, default=D.freeze_epochs)
    p.add_argument("--backbone-lr-scale", type=float, default=D.backbone_lr_scale)
    p.add_argument("--lr", type=float, default=D.lr)
    # cost
    p.add_argument("--cost-steps", type=int, default=D.cost_steps)
    p.add_argument("--cost-warmup", type=int, default=D.cost_warmup)
    ns = vars(p.parse_args(argv))
    quick, only_estimate, grid = ns.pop("quick"), ns.pop("estimate"), ns.pop("grid")
    if grid and "--out" not in (argv if argv is not None else sys.argv):
        p.error("--grid needs --out (the grid's own folder, not the benchmark's)")
    opts = SslOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in ns.items()})
    return (opts.shrunk() if quick else opts), only_estimate, grid, quick


def main(argv: list[str] | None = None) -> int:
    opts, only_estimate, grid_file, quick = parse_args(argv)
    if grid_file:
        grid = load_ssl_grid(grid_file)
        if only_estimate:
            print(estimate_grid(grid)[1])
            return 0
        return 0 if run_ssl_grid(grid, opts.out, quick=quick, echo=print) else 1
    if only_estimate:
        print(estimate(opts))
        return 0
    rows = run_bench(opts)
    print(Path(opts.out, "tables.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
