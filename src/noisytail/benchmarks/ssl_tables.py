"""The Markdown tables of the issue-5 self-supervised benchmark (`noisytail.benchmarks.ssl`):
mean ± sample std over seeds of its rows, per part."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

from noisytail.benchmarks.ssl_options import LOSSES, SSL_METHODS


def _fmt(values: Iterable[float | None], scale: float = 100.0, digits: int = 2) -> str:
    vals = [scale * v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _stat_cells(
    rows: list[dict[str, Any]], keys: tuple[str, ...], scale: float = 100.0, digits: int = 2
) -> str:
    """Table cells ``a | b | ...``: `_fmt` (mean +- std) of each key over ``rows``."""
    return " | ".join(_fmt([r.get(k) for r in rows], scale, digits) for k in keys)


def _group(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def pretrain_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| encoder | epochs | grad views / image | grad views seen | pre-train s | probe acc. "
        "| probe bal. acc. | many third | medium third | few third | few (<20 thr.) | kNN acc. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(("random", *SSL_METHODS))}
    groups = _group(rows, ("method",))
    for (method,), rs in sorted(groups.items(), key=lambda kv: order.get(kv[0][0], 99)):
        failed = sum("error" in r for r in rs)
        name = f"{method} ({failed} failed)" if failed else method
        seen = max(r["grad_views_seen"] for r in rs)
        probe = ("accuracy", "balanced_accuracy", "many_third", "medium_third", "few_third")
        accuracies = _stat_cells(rs, (*(f"probe_{k}" for k in probe), "probe_few_shot"))
        lines.append(
            f"| {name} | {rs[0]['epochs']} | {rs[0]['grad_views_per_image']} | {seen:,} "
            f"| {_stat_cells(rs, ('pretrain_seconds',), 1.0, 0)} "
            f"| {accuracies} | {_stat_cells(rs, ('knn_accuracy',))} |"
        )
    return "\n".join(lines)


def finetune_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| noise | init | loss | test acc. (last) | balanced acc. | few third | many third "
        "| test acc. at best noisy-val |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups = _group(rows, ("noise_rate", "init", "loss"))
    best: dict[tuple, tuple[float, str]] = {}
    for (rate, init, loss), rs in groups.items():
        accs = [r["test_accuracy"] for r in rs if r.get("test_accuracy") is not None]
        if not accs:
            continue
        mean = statistics.mean(accs)
        if (rate, init) not in best or mean > best[(rate, init)][0]:
            best[(rate, init)] = (mean, loss)
    order = {loss: i for i, loss in enumerate(LOSSES)}

    def key(kv: tuple) -> tuple:
        rate, init, loss = kv[0]
        return (rate, init == "scratch", order.get(loss, 99), loss)

    for (rate, init, loss), rs in sorted(groups.items(), key=key):
        acc = _stat_cells(rs, ("test_accuracy",))
        failed = sum("error" in r for r in rs)
        if failed:
            acc += f" ({failed} failed)"
        if (rate, init) in best and best[(rate, init)][1] == loss and len(groups) > 1:
            acc = f"**{acc}**"
        rest = _stat_cells(
            rs,
            (
                "test_balanced_accuracy",
                "test_few_third",
                "test_many_third",
                "test_accuracy_at_best_val",
            ),
        )
        lines.append(f"| sym. {round(100 * rate)} % | {init} | {loss} | {acc} | {rest} |")
    lines.append("")
    for (rate, init), (mean, loss) in sorted(best.items()):
        lines.append(
            f"- best by mean last-epoch test accuracy, {round(100 * rate)} % noise, "
            f"{init}: {loss} ({100 * mean:.2f})"
        )
    return "\n".join(lines)


def cost_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | device, threads | batch | views built | ms views (augment) | ms fwd+bwd+step "
        "| augment share | images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['device']}, {r['threads']} | {r['batch']} | {r['views_built']} "
            f"| {r['ms_views']:.1f} | {r['ms_step']:.1f} | {100 * r['augment_share']:.1f} % "
            f"| {r['images_per_second']:.0f} |"
        )
    return "\n".join(lines)


def tables(rows: list[dict[str, Any]]) -> str:
    parts = []
    pre = [r for r in rows if r["part"] == "pretrain"]
    fine = [r for r in rows if r["part"] == "finetune"]
    cost = [r for r in rows if r["part"] == "cost"]
    if pre:
        parts.append("### (a) Linear probe of frozen encoders (balanced labelled split)\n")
        parts.append(pretrain_table(pre))
    if fine:
        parts.append("\n### (b) Two-stage fine-tuning under symmetric noise\n")
        parts.append(finetune_table(fine))
    if cost:
        parts.append("\n### (c) Pre-training cost (medians)\n")
        parts.append(cost_table(cost))
    return "\n".join(parts) + "\n"
