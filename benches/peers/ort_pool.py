#!/usr/bin/env python3
"""The seeds' multi-thread pattern, in Python, as a peer for `framepipe bench`: one decode thread, N
worker threads each with its own 1-thread ONNX Runtime session, doing letterbox, inference and
postprocessing for whole frames; results come out in whatever order they finish (counted, not fixed).

    python3 ort_pool.py VIDEO MODEL [--workers 8] [--frames N] [--json PATH]

Prints one JSON object: frames, throughput_fps, latency_ms {p50, p90, p99, max} (decode end ->
result), per-step medians, out_of_order {count, max_displacement}.
"""
import argparse, json, queue, threading, time

import cv2
import numpy as np
import onnxruntime as ort


def letterbox(img, size=640, pad=114):
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    dw, dh = (size - nw) / 2, (size - nh) / 2
    if (w, h) != (nw, nh):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad, pad, pad))
    x = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.ascontiguousarray(x), r, left, top


def postprocess(out, r, left, top, conf=0.25, iou=0.45):
    p = out[0].T  # N x (4+nc)
    scores = p[:, 4:].max(1)
    keep = scores > conf
    p, scores = p[keep], scores[keep]
    cls = p[:, 4:].argmax(1)
    xywh = p[:, :4].copy()
    xywh[:, 0] -= xywh[:, 2] / 2
    xywh[:, 1] -= xywh[:, 3] / 2
    boxes = []
    for c in np.unique(cls):
        m = cls == c
        idx = cv2.dnn.NMSBoxes(xywh[m].tolist(), scores[m].tolist(), conf, iou)
        for i in np.array(idx).reshape(-1):
            x, y, w, h = xywh[m][i]
            boxes.append(((x - left) / r, (y - top) / r, (x + w - left) / r, (y + h - top) / r, float(scores[m][i]), int(c)))
    return boxes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("model")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--frames", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    cv2.setNumThreads(1)

    jobs = queue.Queue(maxsize=a.workers)
    done = queue.Queue()

    def session():
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])

    sessions = [session() for _ in range(a.workers)]
    name = sessions[0].get_inputs()[0].name
    size = sessions[0].get_inputs()[0].shape[2]
    for s in sessions:  # warm up, as framepipe does
        s.run(None, {name: np.full((1, 3, size, size), 0.5, np.float32)})

    def worker(sess):
        while True:
            job = jobs.get()
            if job is None:
                return
            seq, captured, frame = job
            t1 = time.perf_counter()
            x, r, left, top = letterbox(frame, size)
            t2 = time.perf_counter()
            out = sess.run(None, {name: x})[0]
            t3 = time.perf_counter()
            boxes = postprocess(out, r, left, top)
            t4 = time.perf_counter()
            done.put((seq, captured, t4, (t2 - t1, t3 - t2, t4 - t3), len(boxes)))

    threads = [threading.Thread(target=worker, args=(s,)) for s in sessions]
    for t in threads:
        t.start()

    def decode():
        cap = cv2.VideoCapture(a.video)
        seq = 0
        while not a.frames or seq < a.frames:
            ok, frame = cap.read()
            if not ok:
                break
            jobs.put((seq, time.perf_counter(), frame))
            seq += 1
        for _ in threads:
            jobs.put(None)

    dec = threading.Thread(target=decode)
    start = time.perf_counter()
    dec.start()
    results = []
    dec_alive = True
    while True:
        try:
            results.append(done.get(timeout=0.05))
        except queue.Empty:
            if not dec.is_alive() and not any(t.is_alive() for t in threads) and done.empty():
                break
    wall = time.perf_counter() - start
    lat = np.array([(r[2] - r[1]) * 1e3 for r in results])
    steps = np.array([r[3] for r in results]) * 1e3
    max_seen, count, max_d = -1, 0, 0
    for seq, *_ in results:
        if seq < max_seen:
            count += 1
            max_d = max(max_d, max_seen - seq)
        max_seen = max(max_seen, seq)
    report = {
        "peer": "python ort pool",
        "workers": a.workers,
        "frames": len(results),
        "throughput_fps": len(results) / wall,
        "latency_ms": {k: float(np.percentile(lat, q)) for k, q in [("p50", 50), ("p90", 90), ("p99", 99)]} | {"max": float(lat.max())},
        "step_p50_ms": {"pre": float(np.median(steps[:, 0])), "infer": float(np.median(steps[:, 1])), "post": float(np.median(steps[:, 2]))},
        "out_of_order": {"count": count, "max_displacement": max_d},
        "onnxruntime": ort.__version__,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        open(a.json, "w").write(text)


if __name__ == "__main__":
    main()
