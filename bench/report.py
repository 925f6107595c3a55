"""The printed table, the comparisons against the targets of issue 6, and the PNG chart."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def finish(
    result: dict[str, Any], results: list[dict[str, Any]], *, out: Path, name: str, began: float,
    load_before: tuple[float, float, float], markdown: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """Close a bench's run: stamp the result (time, machine, load after, wall time, rows), write
    `<name>-latest.json` and `.md` into `out`, and print where they went with the load around it."""
    result.update(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), machine=machine(),
        load_average_after=os.getloadavg(), wall_seconds=time.monotonic() - began, results=results,
    )
    (out / f"{name}-latest.json").write_text(json.dumps(result, indent=2, default=str))
    (out / f"{name}-latest.md").write_text(markdown(result))
    print(f"# results: {out / f'{name}-latest.md'}; wall {result['wall_seconds']:.0f}s; load average "
          f"{load_before[0]:.2f} before, {result['load_average_after'][0]:.2f} after")
    return result


def _m(stat: dict[str, float] | None, digits: int = 2) -> str:
    if not stat or stat.get("median") != stat.get("median"):
        return "-"
    return f"{stat['median']:.{digits}f} [{stat['min']:.{digits}f}-{stat['max']:.{digits}f}]"


def header() -> str:
    return (
        f"{'workload':<18} {'target':<20} {'variant':<38} {'throughput':>26} {'p50 ms':>20} {'p99 ms':>20} "
        f"{'srv cores':>9} {'pg cores':>8} {'gen cores':>9} {'calls/srv-cpu-s':>15}"
    )


def line(row: dict[str, Any]) -> str:
    cores = row.get("cpu_cores", {})
    tp = _m(row["throughput"], 0 if row["throughput"]["median"] > 100 else 2)
    per_cpu = row.get("calls_per_server_cpu_s", {}).get("median")
    flag = " CLIENT-BOUND" if row.get("client_bound") else ""
    return (
        f"{row['workload']:<18} {row['target']:<20} {row['variant']:<38} {tp + ' ' + row['unit']:>26} "
        f"{_m(row['p50_ms']):>20} {_m(row['p99_ms']):>20} "
        f"{cores.get('server', {}).get('median', float('nan')):>9.2f} "
        f"{cores.get('postgres', {}).get('median', float('nan')):>8.2f} "
        f"{cores.get('loadgen', {}).get('median', float('nan')):>9.2f} "
        f"{(per_cpu if per_cpu is not None else float('nan')):>15.0f}{flag}"
    )


def _find(results: list[dict[str, Any]], workload: str, target: str, variant: str | None = None):
    for row in results:
        if row["workload"] == workload and row["target"] == target and (variant is None or row["variant"] == variant):
            return row
    return None


def _med(row: dict[str, Any] | None, key: str) -> float | None:
    if row is None:
        return None
    value = (row.get(key) or {}).get("median")
    return None if value is None or value != value else value


def comparisons(results: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ratios": [], "targets": []}
    top = f"c={max(cfg.concurrencies)}"

    def ratio(name: str, a: float | None, b: float | None) -> float | None:
        value = a / b if a and b else None
        out["ratios"].append({"what": name, "value": value})
        return value

    def target(name: str, measured: float | None, goal: str, met: bool | None) -> None:
        out["targets"].append({"target": name, "measured": measured, "goal": goal, "met": met})

    for workload, variants in (("add_message", [f"c={c}" for c in cfg.concurrencies]), ("get_session", ["c=1", top])):
        for variant in variants:
            real = _find(results, workload, "session-grpc", variant)
            ref = _find(results, workload, "reference", variant)
            noop = _find(results, workload, "no-op", variant)
            ratio(f"{workload} {variant} throughput session-grpc / reference", _med(real, "throughput"), _med(ref, "throughput"))
            ratio(f"{workload} {variant} throughput session-grpc / no-op", _med(real, "throughput"), _med(noop, "throughput"))
            ratio(f"{workload} {variant} p50 session-grpc / reference", _med(real, "p50_ms"), _med(ref, "p50_ms"))
    for workload in ("add_message", "get_session"):
        one = _find(results, workload, "session-grpc 2w", top)
        base = _find(results, workload, "session-grpc 1w", top)
        if one and base:
            ratio(f"{workload} {top} throughput 2 workers / 1 worker", _med(one, "throughput"), _med(base, "throughput"))

    # Issue 14: the server's own cost per call, and throughput where the server is the bottleneck,
    # against the reference measured in the same run; token mode (a cached token) as well.
    for workload in ("add_message", "get_session"):
        ref = _find(results, workload, "reference", top)
        for server in ("session-grpc", "session-grpc token"):
            real = _find(results, workload, server, top)
            if real is None:
                continue
            per_cpu = ratio(f"{workload} {top} calls per server CPU-s {server} / reference",
                            _med(real, "calls_per_server_cpu_s"), _med(ref, "calls_per_server_cpu_s"))
            target(f"{workload} {top} calls per server CPU-s, {server} >= 0.9 x reference", per_cpu, ">= 0.9",
                   None if per_cpu is None else per_cpu >= 0.9)
            through = _med(real, "throughput") / _med(ref, "throughput") if _med(real, "throughput") and _med(ref, "throughput") else None
            target(f"{workload} {top} throughput, {server} >= 0.9 x reference", through, ">= 0.9",
                   None if through is None else through >= 0.9)
    real32 = _med(_find(results, "add_message", "session-grpc", top), "throughput")
    ref32 = _med(_find(results, "add_message", "reference", top), "throughput")
    r = real32 / ref32 if real32 and ref32 else None
    target(f"add_message {top} >= 0.8 x reference", r, ">= 0.8", None if r is None else r >= 0.8)
    # Group commit (SESSION_GROUP_COMMIT): on in "session-grpc", off in "session-grpc nogroup".
    off32 = _med(_find(results, "add_message", "session-grpc nogroup", top), "throughput")
    ratio(f"add_message {top} throughput group commit on / off", real32, off32)
    r = real32 / ref32 if real32 and ref32 else None
    target(f"add_message {top} with group commit >= 1.3 x reference", r, ">= 1.3", None if r is None else r >= 1.3)
    p99, ref_p99 = (_med(_find(results, "add_message", name, top), "p99_ms") for name in ("session-grpc", "reference"))
    r = p99 / ref_p99 if p99 and ref_p99 else None
    target(f"add_message {top} p99 / reference p99 <= 1", r, "<= 1", None if r is None else r <= 1)
    p50 = _med(_find(results, "add_message", "session-grpc", "c=1"), "p50_ms")
    target("add_message c=1 p50 <= 1.5 ms", p50, "<= 1.5 ms", None if p50 is None else p50 <= 1.5)
    g_real = _med(_find(results, "get_session", "session-grpc", top), "throughput")
    g_ref = _med(_find(results, "get_session", "reference", top), "throughput")
    r = g_real / g_ref if g_real and g_ref else None
    target(f"get_session {top} >= 0.8 x reference", r, ">= 0.8", None if r is None else r >= 0.8)
    p50 = _med(_find(results, "get_session", "session-grpc", "c=1"), "p50_ms")
    target("get_session c=1 p50 <= 1 ms", p50, "<= 1 ms", None if p50 is None else p50 <= 1.0)
    big = f"{cfg.big_messages} msgs"
    stream_rows = [
        r for r in results
        if r["workload"] == "stream_large" and r["target"] == "session-grpc" and r["variant"].startswith(big + " ")
        and not r["variant"].endswith(" batched")
    ]
    ceiling = _med(_find(results, "stream_large", "no-op", f"{big} canned"), "throughput")
    best = max((_med(r, "throughput") or 0 for r in stream_rows), default=None)
    default = _med(_find(results, "stream_large", "session-grpc", f"{big} page_size=100"), "throughput")
    target("stream_large >= 20,000 messages/s (default page size 100)", default, ">= 20000",
           None if default is None else default >= 20000)
    target("stream_large >= 20,000 messages/s (page_size 1000)", best, ">= 20000", None if not best else best >= 20000)
    if ceiling and default:
        ratio("stream_large session-grpc (page_size 100) / no-op canned stream", default, ceiling)
        target("stream_large: the no-op grpc.aio stream ceiling on this box (messages/s)", ceiling, "info", None)
    batched = _med(_find(results, "stream_large", "session-grpc", f"{big} page_size=100 batched"), "throughput")
    if batched:
        target("stream_large batched, a page per response (page_size 100; messages/s)", batched, "info", None)
        ratio("stream_large session-grpc batched (page_size 100) / no-op canned stream batched", batched,
              _med(_find(results, "stream_large", "no-op", f"{big} canned batched"), "throughput"))
    peaks = {
        r["variant"]: r["server_rss_peak_mb"]["median"] - r["server_rss_start_mb"]["median"]
        for r in results if r["workload"] == "stream_large" and r["target"] == "session-grpc"
    }
    if peaks:
        growth = max(peaks.values())
        target("stream_large server memory flat (peak RSS growth while streaming, MB)", growth, "flat",
               growth < 20)
    for row in results:
        if row["workload"] == "list_big_user" and ("first page" in row["variant"] or "latest" in row["variant"]
                                                   or "page at" in row["variant"] or "GetSession" in row["variant"]):
            value = _med(row, "p50_ms")
            target(f"{row['variant']} p50 <= 5 ms", value, "<= 5 ms", None if value is None else value <= 5)

    # The Go load generator's rows (python -m bench --loadgen go|both): the server is the bottleneck.
    for workload in ("go add_message", "go get_session"):
        for variant in ("c=1", top):
            real = _find(results, workload, "session-grpc", variant)
            if real is None:
                continue
            ref, noop = _find(results, workload, "reference", variant), _find(results, workload, "no-op", variant)
            ratio(f"{workload} {variant} throughput session-grpc / reference", _med(real, "throughput"), _med(ref, "throughput"))
            ratio(f"{workload} {variant} throughput session-grpc / no-op", _med(real, "throughput"), _med(noop, "throughput"))
            if real.get("calls_per_server_cpu_s") and ref and ref.get("calls_per_server_cpu_s"):
                ratio(f"{workload} {variant} calls per server CPU-s session-grpc / reference",
                      _med(real, "calls_per_server_cpu_s"), _med(ref, "calls_per_server_cpu_s"))
    # The 20,000/s target is judged on the batched stream (a page of 100 per response): one message
    # per response costs grpc.aio alone ~54 us of server CPU a write, so the default stream cannot
    # reach it on this box. The default (unbatched) row is printed beside it, with its own ceiling.
    go_rows = {
        (target_name, variant): _find(results, "go stream_large", target_name, f"{big} {variant}")
        for target_name in ("session-grpc", "no-op")
        for variant in ("page_size=100", "page_size=100 batched", "canned", "canned batched")
    }
    go_batched = _med(go_rows["session-grpc", "page_size=100 batched"], "throughput")
    go_stream = _med(go_rows["session-grpc", "page_size=100"], "throughput")
    go_ceiling = _med(go_rows["no-op", "canned"], "throughput")
    go_batched_ceiling = _med(go_rows["no-op", "canned batched"], "throughput")
    if go_batched is not None:
        target("go stream_large >= 20,000 messages/s to a Go client, batched (page_size 100, a page per response)",
               go_batched, ">= 20000", go_batched >= 20000)
        ratio("go stream_large session-grpc batched / no-op canned stream batched", go_batched, go_batched_ceiling)
        ratio("go stream_large session-grpc batched / session-grpc unbatched", go_batched, go_stream)
    if go_stream is not None:
        target("go stream_large unbatched, a message per response (the default; page_size 100; messages/s)",
               go_stream, "info", None)
        if go_ceiling:
            ratio("go stream_large session-grpc unbatched (page_size 100) / no-op canned stream unbatched", go_stream,
                  go_ceiling)
            target("go stream_large: the no-op grpc.aio stream ceiling to a Go client, unbatched (messages/s)",
                   go_ceiling, "info", None)
        if go_batched_ceiling:
            target("go stream_large: the no-op grpc.aio stream ceiling to a Go client, batched (messages/s)",
                   go_batched_ceiling, "info", None)
        ways = (("unbatched", "page_size=100", "canned"), ("batched", "page_size=100 batched", "canned batched"))
        for way, ours, canned in ways:
            ratio(f"go stream_large messages per server CPU-s session-grpc / no-op, {way}",
                  _med(go_rows["session-grpc", ours], "calls_per_server_cpu_s"),
                  _med(go_rows["no-op", canned], "calls_per_server_cpu_s"))
    summaries = [r for r in results if r["workload"] == "list_big_user" and r["variant"].startswith("GetSessionSummary")]
    if len(summaries) == 2:  # the long session's first, then the one-message session's
        long, one = (_med(r, "p50_ms") for r in summaries)
        r = ratio("GetSessionSummary p50: long session / one-message session", long, one)
        target(f"{summaries[0]['variant']} costs what {summaries[1]['variant']} does (p50 ratio <= 1.5)", r,
               "<= 1.5", None if r is None else r <= 1.5)
    for variant in ("c=1", top):
        ours = _med(_find(results, "add_message", "session-grpc", variant), "throughput")
        adk = _med(_find(results, "adk_append_event", "adk (in-process)", variant), "throughput")
        r = ours / adk if ours and adk else None
        target(f"add_message {variant} >= 4 x ADK append_event", r, ">= 4", None if r is None else r >= 4)
    adk_get = next((r for r in results if r["workload"] == "adk_get_session"), None)
    ours_get = _med(_find(results, "list_big_user", "session-grpc", "GetSession (long session)"), "p50_ms")
    ours_latest = _med(_find(results, "list_big_user", "session-grpc", "ListMessages latest 20 (long session)"), "p50_ms")
    if adk_get and ours_get and ours_latest:
        r = _med(adk_get, "p50_ms") / (ours_get + ours_latest)
        target(f"read a {cfg.big_messages}-event session: ADK get_session / (GetSession + latest page)", r, ">= 100",
               r >= 100)
    adk_list = next((r for r in results if r["workload"] == "adk_list_sessions"), None)
    ours_list = _med(_find(results, "list_big_user", "session-grpc", "ListSessions first page (big user)"), "p50_ms")
    if adk_list and ours_list:
        r = _med(adk_list, "p50_ms") / ours_list
        target(f"list a user's {cfg.big_sessions} sessions: ADK list_sessions / ListSessions first page", r,
               ">= 100", r >= 100)
    from .adk_compare import OURS, PEER

    for workload, variant, key, goal in (
        ("adk_append_event_state", "c=1", "throughput", 1.0),
        ("adk_append_event_state", "c=16", "throughput", 1.0),
        ("adk_get_session_recent", None, "p50_ms", 10.0),
        ("adk_list_sessions_all", None, "p50_ms", 10.0),
    ):
        ours_row, peer_row = _find(results, workload, OURS, variant), _find(results, workload, PEER, variant)
        if not ours_row or not peer_row:
            continue
        label = f"{workload} {ours_row['variant']}"
        if key == "throughput":
            r = ratio(f"{label} throughput {OURS} / {PEER}", _med(ours_row, key), _med(peer_row, key))
        else:
            r = ratio(f"{label} p50 {PEER} / {OURS}", _med(peer_row, key), _med(ours_row, key))
        target(f"{label}: {OURS} faster than {PEER}" + (f" by >= {goal:g}x" if goal > 1 else ""),
               r, f">= {goal:g}", None if r is None else r >= goal)
    return out


def comparison_table(comparisons: dict[str, Any]) -> str:
    lines = ["", "ratios:"]
    for item in comparisons["ratios"]:
        value = "-" if item["value"] is None else f"{item['value']:.2f}"
        lines.append(f"  {item['what']:<70} {value:>8}")
    lines.append("targets:")
    for item in comparisons["targets"]:
        value = "-" if item["measured"] is None else f"{item['measured']:.2f}"
        met = {True: "met", False: "NOT MET", None: "not measured"}[item["met"]]
        lines.append(f"  {item['target']:<80} {value:>9} {item['goal']:>10}  {met}")
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in result["results"] if r["workload"] in ("add_message", "get_session", "add_message_open",
                                                              "chat_turns", "adk_append_event")]
    labels = [f"{r['workload']}\n{r['target']} {r['variant']}" for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(10, len(rows) * 0.75), 10), constrained_layout=True)
    xs = range(len(rows))

    def bars(ax, key: str, label: str) -> None:
        med = [r[key]["median"] for r in rows]
        low = [r[key]["median"] - r[key]["min"] for r in rows]
        high = [r[key]["max"] - r[key]["median"] for r in rows]
        ax.bar(xs, med, yerr=[low, high], capsize=3, label=label)

    bars(ax1, "throughput", "median of reps (error bar: min-max)")
    ax1.set_ylabel("calls/s (turns/s for chat_turns)")
    ax1.set_title("Throughput per workload and server")
    ax1.set_xticks(list(xs), labels, rotation=90, fontsize=7)
    ax1.legend()
    width = 0.4
    ax2.bar([x - width / 2 for x in xs], [r["p50_ms"]["median"] for r in rows], width, label="p50")
    ax2.bar([x + width / 2 for x in xs], [r["p99_ms"]["median"] for r in rows], width, label="p99")
    ax2.set_yscale("log")
    ax2.set_ylabel("latency ms (log)")
    ax2.set_title("Latency percentiles (median of repetitions)")
    ax2.set_xticks(list(xs), labels, rotation=90, fontsize=7)
    ax2.legend()
    fig.suptitle(f"session-grpc bench {result['created']} on {result['machine']}", fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(result: dict[str, Any]) -> str:
    """The run as Markdown: the main table, CPU accounting, ratios and targets."""

    def cell(stat: dict[str, float] | None, digits: int = 2) -> str:
        if not stat or stat.get("median") != stat.get("median"):
            return "-"
        return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}-{stat['max']:.{digits}f})"

    lines = [
        f"Run {result['created']} on {result['machine']}; Python {result['python']}, grpcio {result['grpcio']}; "
        f"load average {result['load_average_before'][0]:.2f} before, {result['load_average_after'][0]:.2f} after; "
        f"wall {result['wall_seconds']:.0f} s. Each figure: median of {result['config']['reps']} repetitions "
        "(min-max in brackets).",
        "",
        "| workload | server | variant | throughput | p50 ms | p99 ms | server cores | PostgreSQL cores | "
        "load-generator cores | calls per server CPU-s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["results"]:
        cores = row.get("cpu_cores", {})
        digits = 0 if row["throughput"]["median"] > 100 else 2
        flag = " **client-bound**" if row.get("client_bound") else ""
        per_cpu = row.get("calls_per_server_cpu_s", {}).get("median")
        lines.append(
            f"| {row['workload']} | {row['target']} | {row['variant']} | "
            f"{cell(row['throughput'], digits)} {row['unit']} | {cell(row['p50_ms'])} | {cell(row['p99_ms'])} | "
            f"{cell(cores.get('server'))} | {cell(cores.get('postgres'))} | {cell(cores.get('loadgen'))}{flag} | "
            f"{'-' if per_cpu is None else f'{per_cpu:.0f}'} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    for item in result["comparisons"]["ratios"]:
        lines.append(f"| {item['what']} | {_fmt(item['value'])} |")
    lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
    for item in result["comparisons"]["targets"]:
        measured = "-" if item["measured"] is None else f"{item['measured']:.2f}"
        met = {True: "yes", False: "**no**", None: "-"}[item["met"]]
        lines.append(f"| {item['target']} | {measured} | {item['goal']} | {met} |")
    for note in result.get("notes", []):
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"
