"""The benchmark's report for a person: one table row per run, ratio rows (chatd /
asyncio, TLS / plain, history on / off, chatd / the bare selectors floor), the server
CPU per delivery and p99 of the unbatched scenario, problems, profiles.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.scenarios import WITH_FLOOR
from bench.server_procs import ROOT


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} x{os.cpu_count()}, Linux {os.uname().release}"


def brief(r: dict[str, Any]) -> str:
    if "failure" in r:
        return f"FAILED {r['failure']}\n{r.get('server_log', '')}"
    lat = r.get("latency_ms") or {}
    return (
        f"{r['deliveries_per_s'] / 1e6:.3f} M deliv/s, {r['msgs_per_s']:.0f} msg/s, "
        f"lat p50 {lat.get('p50', 0):.2f} p99 {lat.get('p99', 0):.2f} "
        f"max {lat.get('max', 0):.2f} ms, lost {r['lost']}, reord {r['reorders']}, "
        f"skipped {r['skipped']}, failed {r['failed']}, server cpu "
        f"{r['server_cpu']:.0%}, loadgen cpu {r['loadgen_cpu']:.0%}, other cpu "
        f"{r['other_cpu']:.0%}, "
        f"rss {r['rss_start'] / 2**20:.1f}/{r['rss_connected'] / 2**20:.1f}/"
        f"{r['rss_after'] / 2**20:.1f} MiB"
    )


def per_cpu(r: dict[str, Any]) -> float:
    """Deliveries per second of server CPU: steadier than deliveries/s when other
    processes share the server's CPU (it assumes the server could use the whole CPU)."""
    return r["deliveries_per_s"] / r["server_cpu"] if r.get("server_cpu") else 0.0


def cpu_us_per_delivery(r: dict[str, Any]) -> float:
    """Microseconds of server CPU per delivery (message x recipient) in the window."""
    rate = r.get("deliveries_per_s") or 0.0
    return r["server_cpu"] / rate * 1e6 if rate else 0.0


def fmt_ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def row(label: str, who: str, r: dict[str, Any]) -> str:
    """One run as a line of the table."""
    if "failure" in r:
        return f"{label:<38} {who:<8} FAILED: {r['failure']}"
    lat = r.get("latency_ms") or {}
    mib = 2**20
    return (
        f"{label:<38} {who:<8} {r['deliveries_per_s']:>10,.0f} "
        f"{per_cpu(r):>10,.0f} {r['msgs_per_s']:>8,.0f} "
        f"{lat.get('p50', 0):>8.2f} {lat.get('p99', 0):>8.2f} "
        f"{lat.get('max', 0):>8.2f} {r['lost']:>5} {r['reorders']:>5} "
        f"{r['rss_start'] / mib:>8.1f}M {r['rss_connected'] / mib:>8.1f}M "
        f"{r['rss_after'] / mib:>8.1f}M {r['bytes_per_conn']:>8,.0f} "
        f"{r['server_cpu']:>7.0%} {r.get('other_cpu', 0):>6.0%}"
    )


def ratio(label: str, a: dict[str, Any], b: dict[str, Any], names: str) -> str:
    """Two runs compared column by column (a / b), as a line of the table."""
    if "failure" in a or "failure" in b:
        return f"{label:<38} {names:<8} -"
    la, lb = a.get("latency_ms") or {}, b.get("latency_ms") or {}
    deliveries = fmt_ratio(a["deliveries_per_s"], b["deliveries_per_s"])
    efficiency = fmt_ratio(per_cpu(a), per_cpu(b))
    return (
        f"{label:<38} {names:<8} {deliveries:>10} {efficiency:>10} "
        f"{fmt_ratio(a['msgs_per_s'], b['msgs_per_s']):>8} "
        f"{fmt_ratio(la.get('p50'), lb.get('p50')):>8} "
        f"{fmt_ratio(la.get('p99'), lb.get('p99')):>8} "
        f"{fmt_ratio(la.get('max'), lb.get('max')):>8} {'':>5} {'':>5} {'':>9} "
        f"{fmt_ratio(a['rss_connected'], b['rss_connected']):>9} "
        f"{fmt_ratio(a['rss_after'], b['rss_after']):>9} "
        f"{fmt_ratio(a['bytes_per_conn'], b['bytes_per_conn']):>8}"
    )


def floor_lines(sc: dict[str, Any]) -> list[str]:
    """A scenario run with the bare selectors loop too: server CPU per delivery and p99
    of each server, then chatd's ratios to that floor and to the asyncio baseline."""
    lines = ["", f"{sc['label']}: server CPU per delivery and p99 latency"]
    for who, r in sc["runs"].items():
        if "failure" in r:
            continue
        us = cpu_us_per_delivery(r)
        p99 = (r.get("latency_ms") or {}).get("p99", 0.0)
        lines.append(f"  {who:<10} {us:6.2f} us/delivery   p99 {p99:7.2f} ms")
    chatd = sc["runs"].get("chatd")
    for base in ("selectors", "asyncio"):
        other = sc["runs"].get(base)
        if not chatd or not other or "failure" in chatd or "failure" in other:
            continue
        p99s = [(x.get("latency_ms") or {}).get("p99") for x in (chatd, other)]
        lines.append(
            f"  chatd/{base:<9} cpu/delivery "
            f"{fmt_ratio(cpu_us_per_delivery(chatd), cpu_us_per_delivery(other))}, "
            f"p99 {fmt_ratio(p99s[0], p99s[1])}"
        )
    return lines


def problem_lines(report: dict[str, Any]) -> list[str]:
    """A line for each run that failed, lost, duplicated, skipped or reordered anything."""
    problems = [
        (sc["name"], who, r)
        for sc in report["scenarios"]
        for who, r in sc["runs"].items()
        if "failure" not in r
        and (r["failed"] or r["lost"] or r["duplicated"] or r["skipped"] or r["reorders"])
    ]
    if not problems:
        return []
    return [""] + [
        f"! {name}/{who}: failed {r['failed']}, lost {r['lost']}, dup "
        f"{r['duplicated']}, skipped {r['skipped']}, reordered "
        f"{r['reorders']}; first errors: {r['errors'][:3]}"
        for name, who, r in problems
    ]


def table(report: dict[str, Any]) -> str:
    lines = [
        f"machine: {report['machine']}; python {report['python']}; server on CPU "
        f"{report['server_cpus'] or 'any'}, load generator on "
        f"{report['loadgen_cpus'] or 'any'}",
        "",
    ]
    head = (
        f"{'scenario':<38} {'server':<8} {'deliv/s':>10} {'/cpu-s':>10} {'msg/s':>8} "
        f"{'p50 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'lost':>5} {'reord':>5} {'RSS start':>9} "
        f"{'RSS conn':>9} {'RSS after':>9} {'B/conn':>8} {'srv cpu':>7} {'others':>6}"
    )
    lines += [head, "-" * len(head)]

    for sc in report["scenarios"]:
        runs = sc["runs"]
        label = sc["label"]
        for who, r in runs.items():
            lines.append(row(label, who if sc["name"] != "history" else f"hist {who}", r))
            label = ""
        if sc["name"] == "history" and {"on", "off"} <= runs.keys():
            lines.append(ratio("", runs["on"], runs["off"], "on/off"))
        elif {"chatd", "tls"} <= runs.keys():
            lines.append(ratio("", runs["tls"], runs["chatd"], "tls/pl"))
        elif {"chatd", "asyncio"} <= runs.keys():
            lines.append(ratio("", runs["chatd"], runs["asyncio"], "ratio"))
        if "selectors" in runs and "chatd" in runs:
            lines.append(ratio("", runs["chatd"], runs["selectors"], "/floor"))
    for sc in report["scenarios"]:
        if sc["name"] in WITH_FLOOR:
            lines += floor_lines(sc)
    lines += problem_lines(report)
    for sc in report["scenarios"]:
        for who, r in sc["runs"].items():
            prof = r.get("profile")
            if not prof:
                continue
            lines.append("")
            lines.append(
                f"profile {sc['name']}/{who}: {prof.get('file', prof.get('error'))}"
                f" ({prof.get('samples', 0)} samples)"
            )
            for kind in ("self", "inclusive"):
                for fn, frac in prof.get(kind, [])[:12]:
                    lines.append(f"  {kind:<9} {frac:6.1%}  {fn}")
    lines.append("")
    if not (ROOT / "chatd" / "history.py").exists():
        lines.append(
            "note: chatd/history.py is absent in this tree, so --db FILE stores "
            "nothing yet and the history rows measure no history cost."
        )
    lines.append(
        "deliv/s: message x recipient per second in the window. /cpu-s: deliveries per "
        "second of server CPU. latency: send -> received, by checker clients spread over "
        "the room. ratio: chatd/asyncio (history: on/off). B/conn: (RSS after connecting - "
        "RSS at start) / connections. srv cpu: the server's CPU use in the window; others: "
        "CPU used meanwhile by other processes on the machine (noise)."
    )
    return "\n".join(lines)
