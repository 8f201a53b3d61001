#!/usr/bin/env python3
"""PyTorch peer on a GPU machine: a YOLO architecture from Ultralytics' model code (random weights,
nothing downloaded), batch 1: eager f32/f16, CUDA-graph replay f32/f16, and end to end from a 1080p
host frame (pinned upload, GPU letterbox, f16 graph, output back on the host).

    python3 torch_yolo.py [--cfg yolov8n.yaml] [--nc 80] [--imgsz 640] [--json PATH]

Needs torch with CUDA and the wheels ultralytics==8.4.190 and ultralytics-thop installed with
--no-deps (PYTHONPATH to an unpacked copy works too). Derived from ../shared/peers/torch_yolov8n.py.
"""
import argparse, json, os, time

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/ycfg")
import numpy as np
import torch
from ultralytics.nn.tasks import DetectionModel

ap = argparse.ArgumentParser()
ap.add_argument("--cfg", default="yolov8n.yaml")
ap.add_argument("--nc", type=int, default=80)
ap.add_argument("--imgsz", type=int, default=640)
ap.add_argument("--json")
a = ap.parse_args()
torch.manual_seed(0)
m = DetectionModel(a.cfg, nc=a.nc, verbose=False).eval().fuse(verbose=False).cuda()
S = a.imgsz
x = torch.rand(1, 3, S, S, device="cuda")
res = {"cfg": a.cfg, "nc": a.nc, "imgsz": S, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}


def bench(fn, n=300, warm=30):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return {"p50_ms": ts[len(ts) // 2], "p99_ms": ts[int(len(ts) * 0.99)], "min_ms": ts[0]}


def graph(mod, inp):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(5):
            mod(inp)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = mod(inp)
    return g, out


with torch.inference_mode():
    res["eager_f32"] = bench(lambda: m(x))
    g, _ = graph(m, x)
    res["graph_f32"] = bench(lambda: g.replay())
    mh = m.half()
    xh = x.half()
    res["eager_f16"] = bench(lambda: mh(xh))
    g, _ = graph(mh, xh)
    res["graph_f16"] = bench(lambda: g.replay())
    frame = np.random.randint(0, 255, (1080, 1920, 3), np.uint8)
    pin = torch.from_numpy(frame).pin_memory()
    xin = torch.zeros(1, 3, S, S, device="cuda", dtype=torch.half)
    g, gout = graph(mh, xin)
    nh = round(S * 1080 / 1920)
    top = (S - nh) // 2

    def e2e():
        f = pin.cuda(non_blocking=True).permute(2, 0, 1)[None].flip(1).half() / 255
        r = torch.nn.functional.interpolate(f, size=(nh, S), mode="bilinear", align_corners=False)
        xin.fill_(114 / 255)
        xin[:, :, top : top + nh, :] = r
        g.replay()
        o = gout[0] if isinstance(gout, (tuple, list)) else gout
        return o.float().cpu()

    res["e2e_1080p_graph_f16"] = bench(e2e)
for k, v in res.items():
    print(f"{k}: {v}")
if a.json:
    with open(a.json, "w") as fh:
        json.dump(res, fh, indent=1)
