#!/usr/bin/env python3
"""Ultralytics' own predictor as a peer for `framepipe bench`: `YOLO(model.onnx).predict(video,
stream=True)` (ONNX Runtime CPU under the hood), on the same model, video and machine.

    YOLO_OFFLINE=1 python3 ultralytics_predict.py VIDEO MODEL [--frames N] [--json PATH]

Prints one JSON object: frames, throughput_fps (frames / wall time), Ultralytics' own per-image
speeds (pre, inference, post; medians), and the per-frame latency (the predictor is serial: each
frame's pre + inference + post).
"""
import argparse, json, os, time

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/ycfg")

import numpy as np
from ultralytics import YOLO


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("model")
    ap.add_argument("--frames", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    model = YOLO(a.model, task="detect")
    # Warm up on one frame, as framepipe does.
    for _ in model.predict(a.video, stream=True, verbose=False, vid_stride=1, max_det=300):
        break
    speeds, n = [], 0
    start = time.perf_counter()
    for r in model.predict(a.video, stream=True, verbose=False, conf=0.25, iou=0.45):
        speeds.append((r.speed["preprocess"], r.speed["inference"], r.speed["postprocess"]))
        n += 1
        if a.frames and n >= a.frames:
            break
    wall = time.perf_counter() - start
    s = np.array(speeds)
    per_frame = s.sum(1)
    import ultralytics
    report = {
        "peer": "ultralytics predict(stream=True)",
        "ultralytics": ultralytics.__version__,
        "frames": n,
        "throughput_fps": n / wall,
        "speed_p50_ms": {"pre": float(np.median(s[:, 0])), "inference": float(np.median(s[:, 1])), "post": float(np.median(s[:, 2]))},
        "latency_ms": {"p50": float(np.median(per_frame)), "p99": float(np.percentile(per_frame, 99)), "max": float(per_frame.max())},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        open(a.json, "w").write(text)


if __name__ == "__main__":
    main()
