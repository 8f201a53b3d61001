#!/usr/bin/env python3
"""Prints framepipe's modes beside the peers (reads OUTDIR/{framepipe,ultralytics,ort_pool}.json)."""
import json, os, sys

out = sys.argv[1]
fp = json.load(open(os.path.join(out, "framepipe.json")))
peers = {}
for name in ("ultralytics", "ort_pool"):
    p = os.path.join(out, name + ".json")
    if os.path.exists(p):
        peers[name] = json.load(open(p))

rows = []
for mode in ("serial", "pipelined", "pool"):
    if mode in fp:
        m = fp[mode]
        rows.append((f"framepipe {mode}", m["throughput_fps"], m["latency_us"]["p50"] / 1e3, m["latency_us"]["p99"] / 1e3,
                     m["out_of_order"]["count"], m["frames_out"]))
if "ultralytics" in peers:
    u = peers["ultralytics"]
    rows.append(("ultralytics predict", u["throughput_fps"], u["latency_ms"]["p50"], u["latency_ms"]["p99"], 0, u["frames"]))
if "ort_pool" in peers:
    p = peers["ort_pool"]
    rows.append((f"python pool x{p['workers']}", p["throughput_fps"], p["latency_ms"]["p50"], p["latency_ms"]["p99"],
                 p["out_of_order"]["count"], p["frames"]))

base = peers.get("ultralytics", {}).get("throughput_fps")
print(f"{'run':<24} {'fps':>8} {'vs ultralytics':>15} {'p50 ms':>9} {'p99 ms':>9} {'out of order':>13} {'frames':>7}")
for name, fps, p50, p99, ooo, n in rows:
    ratio = f"{fps / base:.2f}x" if base else "-"
    print(f"{name:<24} {fps:>8.2f} {ratio:>15} {p50:>9.1f} {p99:>9.1f} {ooo:>13} {n:>7}")
