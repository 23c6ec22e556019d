"""The daemon bench's rows and tables: ratios against the targets (overhead <= 5%, throughput
ratio >= 1, RSS delta <= 40 MB, ready < 2 s, pipe_overhead <= 5%).
"""
from __future__ import annotations


def row(name: str, args, paired: dict, bare: dict, ready: float, online: float | None) -> dict:
    r = {"model": name, "threads": args.threads, "runs": args.runs}
    r.update({k: round(v, 4) for k, v in paired.items() if k.endswith("_ms")})
    r["sync_overhead"] = round(paired["sync_ms"] / paired["bare_ms"] - 1, 4)
    r["sync_overhead_ms"] = round(paired["sync_ms"] - paired["bare_ms"], 4)
    r["overhead"] = round(paired["daemon_ms"] / paired["bare_ms"] - 1, 4)
    r["overhead_ms"] = round(paired["daemon_ms"] - paired["bare_ms"], 4)
    r["inline_overhead"] = round(paired["inline_ms"] / paired["bare_ms"] - 1, 4)
    for key in ("mb", "w2", "mb2"):
        r[f"bare_{key}_inf_s"] = round(paired[f"bare_{key}_inf_s"], 1)
        r[f"daemon_{key}_inf_s"] = round(paired[f"{key}_inf_s"], 1)
        r[f"{key}_ratio"] = round(paired[f"{key}_ratio"], 3)
        r[f"{key}_mean_batch"] = paired[f"{key}_mean_batch"]
    r.update({"bare_rss_mb": bare["rss_mb"], "daemon_rss_mb": paired["rss_mb"],
              "rss_delta_mb": round(paired["rss_mb"] - bare["rss_mb"], 1), "ready_s": round(ready, 3),
              "ready_online_s": round(online, 3) if online is not None else None})
    r["targets_met"] = {"overhead_5pct_sync": r["sync_overhead"] <= 0.05, "overhead_5pct_async": r["overhead"] <= 0.05,
                        "throughput_mb": r["mb_ratio"] >= 1.0, "throughput_mb2": r["mb2_ratio"] >= 1.0,
                        "rss_40mb": r["rss_delta_mb"] <= 40, "ready_2s": ready < 2.0}
    return r


def table(rows: list[dict], floor: dict) -> None:
    pipeline = [("model", 14, "s"), ("pipe_bare_ms", 14, ".3f"), ("pipe_inproc_ms", 16, ".3f"),
                ("pipe_daemon_ms", 16, ".3f"), ("pipe_overhead", 15, ".1%"), ("pipe_vs_bare", 14, ".1%"),
                ("pipe_inproc_cpu_ms", 20, ".3f"), ("pipe_daemon_cpu_ms", 20, ".3f"),
                ("pipe_cpu_overhead", 19, ".1%"), ("pipe_parent_ms", 16, ".3f"), ("pipe_parent_cpu_ms", 20, ".3f"),
                ("pipe_parent_vs_lane_cpu", 25, ".1%")]
    print("\nsource -> sink (folder -> model -> JSONL), ms per input (wall, and CPU of all the side's "
          "processes); overhead = daemon / inproc - 1; parent = the daemon without lanes")
    print("".join(f"{c:>{w}}" for c, w, _ in pipeline))
    for r in rows:
        print("".join(f"{r[c]:>{w}{f}}" for c, w, f in pipeline))
    if not floor:
        return
    print(f"\nfloor: pipe round trip {floor['pipe_us']:.1f} us (p95 {floor['pipe_p95_us']:.1f}); two thread "
          f"hand-offs {floor['hops_us']:.1f} us; daemon echo (no model) async {floor['echo_us']:.1f} us "
          f"(p95 {floor['echo_p95_us']:.1f}), sync {floor['echo_sync_us']:.1f} us (p95 {floor['echo_sync_p95_us']:.1f})")
    latency = [("model", 14, "s"), ("bare_ms", 9, ".3f"), ("sync_ms", 9, ".3f"), ("sync_overhead", 14, ".1%"),
               ("daemon_ms", 10, ".3f"), ("overhead", 9, ".1%"),
               ("overhead_ms", 12, ".3f"), ("bare_p95_ms", 12, ".3f"), ("daemon_p95_ms", 14, ".3f"),
               ("inline_ms", 10, ".3f"), ("inline_overhead", 16, ".1%"), ("ready_s", 8, ".2f"),
               ("ready_online_s", 15, ".2f")]
    volume = [("model", 14, "s"), ("bare_mb_inf_s", 14, ".0f"), ("daemon_mb_inf_s", 16, ".0f"),
              ("mb_ratio", 9, ".2f"), ("bare_w2_inf_s", 14, ".0f"), ("daemon_w2_inf_s", 16, ".0f"),
              ("w2_ratio", 9, ".2f"), ("daemon_mb2_inf_s", 17, ".0f"), ("mb2_ratio", 10, ".2f"),
              ("bare_rss_mb", 12, ".1f"), ("daemon_rss_mb", 14, ".1f"),
              ("rss_delta_mb", 13, ".1f")]
    for cols in (latency, volume):
        print("".join(f"{c:>{w}}" for c, w, _ in cols))
        for r in rows:
            print("".join(f"{r[c]:>{w}{f}}" if r[c] is not None else f"{'-':>{w}}" for c, w, f in cols))
