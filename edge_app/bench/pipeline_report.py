"""Tables and JSON for ``edge-app bench pipeline`` (see :mod:`edge_app.bench.pipeline`)."""

from __future__ import annotations

import math
import os
from dataclasses import fields, is_dataclass
from typing import Any

THROUGHPUT_TARGET = 0.90
FAILOVER_TARGET_S = 2.0
CODEC_SHARE_TARGET = 0.10
WIRE_TARGET = 1.01


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rng(r: tuple[float, float], fmt: str = ".2f") -> str:
    return f"{r[0]:{fmt}}-{r[1]:{fmt}}"


def format_throughput(t: Any) -> list[str]:
    lines = [
        f"### Throughput: {t.model}, {t.threads} interpreter thread(s) everywhere, "
        f"{t.rounds} interleaved rounds of {t.jobs} timed jobs, {t.in_flight} in flight "
        f"per worker, {t.processes} whole-model processes and 1-worker fleets used in turn",
        "",
        "| configuration | jobs/s median | jobs/s range | ms/job | / whole model (median) "
        "| ratio range | CPU ms/job | whole CPU / this CPU (median, range) |",
        "|---|---|---|---|---|---|---|---|",
        f"| whole model, one process | {t.whole.median:.2f} | {_rng(t.whole.range)} "
        f"| {1000 / t.whole.median:.2f} | 1 | - | {t.cpu_ms['whole'].median:.1f} | 1 |",
    ]
    for name, series in t.pipelines.items():
        ratio = t.ratios[name]
        lines.append(
            f"| pipeline, {name} | {series.median:.2f} | {_rng(series.range)} "
            f"| {1000 / series.median:.2f} | {ratio.median:.3f} | {_rng(ratio.range, '.3f')} "
            f"| {t.cpu_ms[name].median:.1f} | {t.cpu_ratios[name].median:.3f} "
            f"({_rng(t.cpu_ratios[name].range, '.3f')}) |"
        )
    one = t.ratios.get("1 worker")
    if one is not None:
        lines.append("")
        lines.append(
            f"1 worker / whole model = {one.median:.3f} (target >= {THROUGHPUT_TARGET}: "
            f"{_verdict(one.median >= THROUGHPUT_TARGET)}); dropped jobs: {t.dropped}"
        )
    lines.append("")
    lines += [f"- plan, {name}: {plan}" for name, plan in t.plans.items()]
    return lines


def format_codec(results: list[Any]) -> list[str]:
    lines = [
        "### Per-hop cost (edge_app.bench.codec.run_codec_bench)",
        "",
        "| broker | size | encode+decode ms | transit ms | codec/transit | wire/raw (stage 0) "
        "| wire/raw (deep) | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.broker} | {r.size} | {r.codec_ms:.3f} | {r.transit_ms:.2f} "
            f"| {100 * r.codec_share:.1f} % | {r.first_hop_ratio:.4f} | {r.wire_ratio:.4f} "
            f"| {r.samples} |"
        )
    share = max(r.codec_share for r in results)
    first = max(r.first_hop_ratio for r in results)
    deep = max(r.wire_ratio for r in results)
    lines += [
        "",
        f"worst codec/transit {100 * share:.1f} % (target <= {100 * CODEC_SHARE_TARGET:.0f} %: "
        f"{_verdict(share <= CODEC_SHARE_TARGET)}); worst wire/raw {first:.4f} at stage 0, "
        f"{deep:.4f} deep in the pipeline with a 3-stage trace (target <= {WIRE_TARGET}: "
        f"{_verdict(first <= WIRE_TARGET)} / {_verdict(deep <= WIRE_TARGET)})",
    ]
    return lines


def format_failover(f: Any) -> list[str]:
    lines = [
        f"### Failover: {f.model}, {f.workers} workers (FC stage sharded 2 ways), jobs offered "
        f"at {f.rate:.0f}/s, heartbeat {f.heartbeat_s:g} s",
        "",
        "| # | killed | seat | recovery s | throughput steady s | latency steady s "
        "| in-flight jobs done s | new plan s | pre-kill jobs/s | pre-kill p95 latency ms "
        "| worst latency after ms | jobs | vanished | dropped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, k in enumerate(f.kills):
        lines.append(
            f"| {i + 1} | {k.victim} | {k.seat} | {k.recovery_s:.2f} "
            f"| {k.throughput_recovery_s:.2f} | {k.latency_recovery_s:.2f} "
            f"| {k.in_flight_done_s:.2f} | {_opt(k.replan_s)} | {k.pre_rate:.1f} "
            f"| {1000 * k.pre_p95_latency_s:.0f} | {1000 * k.worst_latency_s:.0f} "
            f"| {k.jobs} | {k.vanished} | {k.dropped} |"
        )
    rec = [k.recovery_s for k in f.kills]
    lines += [
        "",
        f"median recovery {f.median_s:.2f} s (range {min(rec):.2f}-{max(rec):.2f}; target <= "
        f"{FAILOVER_TARGET_S:g} s: {_verdict(f.median_s <= FAILOVER_TARGET_S)}); "
        f"vanished {f.vanished} (must be 0), dropped {f.dropped}",
        "steady = a 3 s sliding window of completions (step 50 ms) within 10 % of the pre-kill "
        "rate (the 3 s before the kill) from then until 1 s before the stream ends, AND no later "
        "job above 2 x the pre-kill p95 latency + 50 ms; recovery = the later of the two",
    ]
    return lines


def format_report(results: dict[str, Any]) -> str:
    lines = [
        f"edge-app bench pipeline on {os.cpu_count()} CPU(s), load average "
        f"{os.getloadavg()[0]:.1f} at the end, {results.get('elapsed_s', 0):.0f} s",
        "",
    ]
    for key, fmt in (
        ("throughput", format_throughput),
        ("codec", format_codec),
        ("failover", format_failover),
    ):
        if key in results:
            lines += [*fmt(results[key]), ""]
    return "\n".join(lines)


def to_json(value: Any) -> Any:
    """Dataclasses, dicts and lists as plain JSON values (inf/nan as null)."""
    if is_dataclass(value) and not isinstance(value, type):
        doc = {f.name: to_json(getattr(value, f.name)) for f in fields(value)}
        for name, attr in vars(type(value)).items():
            if isinstance(attr, property):
                doc[name] = to_json(getattr(value, name))
        return doc
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
