#!/usr/bin/env python3
"""ONNX Runtime on the CPU, batch 1, one session with N intra-op threads: the latency peer for the
Runtime stage (the model alone, a letterboxed random input, no decode or postprocessing).

    python3 ort_cpu.py MODEL [--threads 16] [--iters 200] [--json PATH]
"""
import argparse, json, time

import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--threads", type=int, default=16)
ap.add_argument("--iters", type=int, default=200)
ap.add_argument("--json")
a = ap.parse_args()
so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
so.inter_op_num_threads = 1
s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
inp = s.get_inputs()[0]
shape = [d if isinstance(d, int) else 1 for d in inp.shape]
x = np.random.default_rng(0).random(shape, dtype=np.float32)
for _ in range(10):
    s.run(None, {inp.name: x})
ts = []
t0 = time.perf_counter()
for _ in range(a.iters):
    t = time.perf_counter()
    s.run(None, {inp.name: x})
    ts.append((time.perf_counter() - t) * 1e3)
wall = time.perf_counter() - t0
ts.sort()
res = {
    "model": a.model.split("/")[-1],
    "threads": a.threads,
    "onnxruntime": ort.__version__,
    "p50_ms": ts[len(ts) // 2],
    "p99_ms": ts[int(len(ts) * 0.99)],
    "throughput_fps": a.iters / wall,
}
print(json.dumps(res))
if a.json:
    with open(a.json, "w") as fh:
        json.dump(res, fh, indent=1)
