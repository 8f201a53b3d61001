#!/usr/bin/env bash
# The tuned plan (`framepipe bench --tune`) against a grid of hand-set plans, on one video and model:
# replicas infer=1,2,3 (pre and post 1), ONNX Runtime threads per session 1 and 2, pins or none.
# Prints one row per plan (throughput, p50, p99: medians over ROUNDS rounds, the points interleaved
# so that a noisy neighbour hits them all alike) and the tuned plan's throughput as a fraction of
# the best grid point's (target: >= 0.95, with a p99 no worse).
#
#   benches/tune-grid.sh                       # the sample video, the person detector, 50 frames a point
#   FRAMES=40 VIDEO=x.mp4 benches/tune-grid.sh -- --engine ort
#
# Environment: FRAMEPIPE (the binary; default $CARGO_TARGET_DIR/release/framepipe, else
# target/release/framepipe), VIDEO (default assets/sample.mp4), FRAMES (default 50), ROUNDS
# (default 3), OUT (a
# directory for the JSON reports and tuned.toml; default a temporary one). Arguments after `--` go
# to every `framepipe bench` (e.g. --engine, --model).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[ "${1:-}" = "--" ] && shift
extra=("$@")
target="${CARGO_TARGET_DIR:-$repo/target}"
framepipe="${FRAMEPIPE:-$target/release/framepipe}"
[ -x "$framepipe" ] || { echo "error: $framepipe not found: cargo build --release -p framepipe-cli (or set FRAMEPIPE)" >&2; exit 2; }
video="${VIDEO:-assets/sample.mp4}"
[ -f "$video" ] || { echo "error: video $video not found: framepipe sample-video (or set VIDEO)" >&2; exit 2; }
frames="${FRAMES:-50}"
rounds="${ROUNDS:-3}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
cores=$(nproc)
last=$((cores - 1))

# name|replicas|threads|pins ("-" for none)
grid=(
  "i1 t1|infer=1|1|-"
  "i1 t1 pinned|infer=1|1|decode=0,pre=0,post=0,infer=$last"
  "i1 t2|infer=1|2|-"
  "i2 t1|infer=2|1|-"
  "i2 t1 light-pinned|infer=2|1|decode=0,pre=0,post=$last"
  "i2 t2|infer=2|2|-"
  "i3 t1|infer=3|1|-"
)

run_point() { # name json args...
  local name=$1 json=$2
  shift 2
  echo ">> $name: framepipe bench $video --mode pipelined --frames $frames $* ${extra[*]}" >&2
  "$framepipe" bench "$video" --mode pipelined --frames "$frames" --json "$json" "$@" "${extra[@]}" >"$json.log" 2>&1 \
    || { echo "error: $name failed; see $json.log" >&2; tail -3 "$json.log" >&2; exit 1; }
}

rows=()
for round in $(seq 1 "$rounds"); do
  for point in "${grid[@]}"; do
    IFS='|' read -r name replicas threads pins <<<"$point"
    args=(--replicas "$replicas" --threads "$threads")
    [ "$pins" != "-" ] && args+=(--pin "$pins")
    json="$out/grid-$(echo "$name" | tr ' ' '_')-$round.json"
    run_point "$name (round $round)" "$json" "${args[@]}"
    rows+=("grid|$name ($replicas, threads $threads, pins ${pins})|$json")
  done
  # The tuned plan: as `--tune` makes it (calibration, then the run), and loaded back from its file.
  run_point "tuned (round $round)" "$out/tuned-$round.json" --tune --tune-out "$out/tuned-$round.toml"
  grep -E '^(tuned plan|  why)' "$out/tuned-$round.json.log" >&2 || true
  rows+=("tuned|tuned (--tune)|$out/tuned-$round.json")
  run_point "tuned, from its file (round $round)" "$out/tuned-config-$round.json" --config "$out/tuned-$round.toml"
  rows+=("tuned|tuned (--config tuned.toml)|$out/tuned-config-$round.json")
done

printf '%s\n' "${rows[@]}" >"$out/rows.txt"
python3 - "$out/rows.txt" <<'PY'
import json, statistics, sys
runs = {}  # name -> (kind, [(fps, p50, p99, lost, ooo)], plans)
for line in open(sys.argv[1]):
    kind, name, path = line.rstrip("\n").split("|", 2)
    m = json.load(open(path))["pipelined"]
    entry = runs.setdefault(name, (kind, [], []))
    lat = m["latency_us"]
    entry[1].append((m["throughput_fps"], lat["p50"] / 1e3, lat["p99"] / 1e3, m["lost"], m["out_of_order"]["count"]))
    t = m.get("tuned")
    if t:
        p, r = t["plan"], t["plan"]["replicas"]
        pins = ",".join("%s=%s" % (k, "+".join(map(str, v))) for k, v in p["pins"].items() if v) or "none"
        entry[2].append("pre=%d infer=%d post=%d, threads %d, pins %s, max_in_flight %d (predicted %.2f fps)" % (
            r["pre"], r["infer"], r["post"], p["threads"], pins, p["max_in_flight"], t["predicted_fps"]))
rows = []
for name, (kind, xs, plans) in runs.items():
    med = lambda k: statistics.median(x[k] for x in xs)
    fps = [x[0] for x in xs]
    rows.append((kind, name, med(0), min(fps), max(fps), med(1), med(2), sum(x[3] for x in xs), sum(x[4] for x in xs), plans))
w = max(len(r[1]) for r in rows)
print("%-*s  %7s  %13s  %8s  %8s  %4s  %3s" % (w, "plan (%d runs each, medians)" % len(xs), "fps", "fps min-max", "p50 ms", "p99 ms", "lost", "ooo"))
for kind, name, fps, lo, hi, p50, p99, lost, ooo, _ in rows:
    print("%-*s  %7.2f  %6.2f-%-6.2f  %8.1f  %8.1f  %4d  %3d" % (w, name, fps, lo, hi, p50, p99, lost, ooo))
grid = [r for r in rows if r[0] == "grid"]
best = max(grid, key=lambda r: r[2])
print("\nbest grid point: %s at %.2f fps, p99 %.1f ms" % (best[1], best[2], best[6]))
for r in rows:
    if r[0] == "tuned":
        ratio = r[2] / best[2]
        ok = "meets" if ratio >= 0.95 and r[6] <= best[6] else "misses"
        print("%s: %.3f of the best throughput, p99 %.1f ms vs %.1f ms -> %s the target (>= 0.95, p99 no worse)"
              % (r[1], ratio, r[6], best[6], ok))
plans = sorted(set(p for r in rows for p in r[9]))
for p in plans:
    print("tuned plan chosen: " + p)
PY
echo "(reports and tuned.toml in $out)"
