//! The `framepipe` binary, end to end: its JSON interfaces and its errors (one line naming the file
//! and the problem, exit code 2, no panic).

mod common;
use common::{asset, bin, run, stderr};

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

/// The last line of stderr, which must be the one-line error.
fn error_line(o: &Output) -> String {
    let s = stderr(o);
    assert!(!s.contains("panicked"), "panic: {s}");
    s.lines().rfind(|l| l.starts_with("error")).unwrap_or_default().to_string()
}

#[test]
fn detect_writes_the_documented_json() {
    let o = run(bin().args(["detect", asset("images/astronaut.png").to_str().unwrap(), "--json", "-"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(["ort", "tract"].contains(&v["engine"].as_str().unwrap()));
    assert!(v["model"].as_str().unwrap().ends_with("person-yolov8s.onnx"));
    assert_eq!((v["image"]["width"].as_u64(), v["image"]["height"].as_u64()), (Some(512), Some(512)));
    for k in ["pre", "infer", "post"] {
        assert!(v["timings_ms"][k].as_f64().unwrap() >= 0.0);
    }
    let d = &v["detections"][0];
    assert_eq!((d["class_id"].as_u64(), d["label"].as_str()), (Some(0), Some("Normal")));
    assert!(d["score"].as_f64().unwrap() > 0.4);
    assert_eq!(d["box"].as_array().unwrap().len(), 4);
}

#[test]
fn detect_refuses_bad_input_with_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let img = asset("images/astronaut.png");
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image").unwrap();
    let text = dir.path().join("model.onnx");
    std::fs::write(&text, b"not a model").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["detect".into(), "/nope/missing.png".into()], "missing.png"),
        (vec!["detect".into(), junk.display().to_string()], "junk.png"),
        (vec!["detect".into(), img.display().to_string(), "--model".into(), "/nope/m.onnx".into()], "m.onnx"),
        (vec!["detect".into(), img.display().to_string(), "--model".into(), text.display().to_string()], "model.onnx"),
        (vec!["detect".into(), img.display().to_string(), "--conf".into(), "NaN".into()], "conf"),
    ];
    for (args, name) in cases {
        let o = run(bin().args(&args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let line = error_line(&o);
        assert!(line.contains(name), "{args:?}: `{line}` does not name {name}");
        assert_eq!(stderr(&o).lines().filter(|l| l.starts_with("error")).count(), 1);
    }
}

fn make_video(dir: &Path, name: &str, seconds: &str) -> PathBuf {
    let path = dir.join(name);
    let o =
        run(bin().args(["sample-video", "--out", path.to_str().unwrap(), "--size", "320x180", "--seconds", seconds]));
    assert!(o.status.success(), "{}", stderr(&o));
    path
}

/// A sample video and its frame count (as `sample-video` reports it).
fn make_counted_video(dir: &Path, name: &str, seconds: &str) -> (PathBuf, u64) {
    let path = dir.join(name);
    let o =
        run(bin().args(["sample-video", "--out", path.to_str().unwrap(), "--size", "320x180", "--seconds", seconds]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let n = out.split(": ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok());
    (path, n.unwrap_or_else(|| panic!("no frame count in `{out}`")))
}

#[test]
fn bench_runs_every_mode_on_every_frame_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let video = make_video(dir.path(), "short.mp4", "2");
    let (json, trace, plot) = (dir.path().join("b.json"), dir.path().join("t.json"), dir.path().join("p.png"));
    let o = run(bin().args([
        "bench",
        video.to_str().unwrap(),
        "--mode",
        "all",
        "--frames",
        "60",
        "--json",
        json.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for mode in ["serial", "pipelined", "pool"] {
        let m = &v[mode];
        assert_eq!(m["mode"], mode);
        for key in [
            "frames_in",
            "frames_out",
            "dropped",
            "skipped",
            "lost",
            "reordered",
            "throughput_fps",
            "bound_fps",
            "efficiency",
            "latency_us",
            "stage_sum_p50_us",
            "overhead_p50_us",
            "stages",
            "engine",
            "model",
            "video",
        ] {
            assert!(!m[key].is_null(), "{mode}: no `{key}`");
        }
        assert_eq!(
            (m["frames_in"].as_u64(), m["frames_out"].as_u64(), m["processed"].as_u64()),
            (Some(60), Some(60), Some(60)),
            "{mode}"
        );
        assert_eq!(m["video"]["width"], 320);
        for k in ["p50", "p90", "p99", "p999", "max"] {
            assert!(m["latency_us"][k].as_f64().is_some(), "{mode}: latency_us.{k}");
        }
        let stages: Vec<&str> = m["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(&stages[..4], &["decode", "pre", "infer", "post"], "{mode}");
        // One video, one model: one stream and one branch.
        let streams = m["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 1, "{mode}");
        assert_eq!((streams[0]["id"].as_u64(), streams[0]["frames_out"].as_u64()), (Some(0), Some(60)), "{mode}");
        assert_eq!(streams[0]["source"].as_str(), video.to_str(), "{mode}");
        let branches = m["branches"].as_array().unwrap();
        assert_eq!(branches.len(), 1, "{mode}");
        assert!(branches[0]["model"].as_str().unwrap().ends_with("person-yolov8s.onnx"), "{mode}");
        let (p50, p99) =
            (branches[0]["latency_us"]["p50"].as_f64().unwrap(), branches[0]["latency_us"]["p99"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p99, "{mode}: branch p50 {p50} p99 {p99}");
        assert!(p50 <= m["latency_us"]["p50"].as_f64().unwrap(), "{mode}: the branch ends before the result is out");
    }
    let p = &v["pipelined"];
    assert_eq!(
        (p["reordered"].as_u64(), p["lost"].as_u64(), p["out_of_order"]["count"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    // The trace parses, and holds one span per frame per stage.
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    let spans = events.iter().filter(|e| e["ph"] == "X").count();
    assert_eq!(spans, 3 * 60 * 4, "serial, pipelined and pool: decode, pre, infer, post per frame");
    assert!(std::fs::metadata(&plot).unwrap().len() > 10_000, "the plot was drawn");
}

#[test]
fn bench_refuses_bad_settings_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let video = make_video(dir.path(), "v.mp4", "0.5");
    let v = video.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["bench", "/nope/clip.mp4"], "clip.mp4"),
        (vec!["bench", v, "/nope/second.mp4"], "second.mp4"),
        (vec!["bench", v, "--model", "person-detector", "--model", "no-such-model"], "no-such-model"),
        (vec!["bench", v, "--replicas", "infer=0"], "infer=0"),
        (vec!["bench", v, "--pin", "infer=4096"], "core 4096"),
        (vec!["bench", v, "--replicas", "gpu=2"], "gpu"),
        (vec!["bench", v, "--queue", "0"], "queue"),
    ];
    for (args, name) in cases {
        let t = std::time::Instant::now();
        let o = run(bin().args(&args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let line = error_line(&o);
        assert!(line.contains(name), "{args:?}: `{line}` does not name {name}");
        assert!(t.elapsed().as_secs() < 20, "{args:?} ran before refusing");
    }
    // An unknown engine is a usage error (clap), also exit code 2.
    let o = run(bin().args(["bench", v, "--engine", "tensorflow"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("tensorflow"));
}

#[test]
fn bench_reports_a_truncated_video_and_processes_what_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("cut.avi");
    let o =
        run(bin().args(["sample-video", "--out", video.to_str().unwrap(), "--size", "320x180", "--seconds", "1.5"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&video).unwrap();
    std::fs::write(&video, &bytes[..bytes.len() / 2]).unwrap();
    let json = dir.path().join("b.json");
    let o =
        run(bin().args(["bench", video.to_str().unwrap(), "--mode", "pipelined", "--json", json.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let line = error_line(&o);
    assert!(line.contains("cut.avi") && line.contains("truncated"), "{line}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let p = &v["pipelined"];
    let processed = p["processed"].as_u64().unwrap();
    assert!(processed > 5 && processed < 45, "{processed}");
    assert_eq!(
        (p["errored"].as_u64(), p["lost"].as_u64()),
        (Some(1), Some(0)),
        "the decode error is counted, in its slot"
    );
}

#[test]
fn bench_runs_two_videos_through_two_models_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    // Two streams of different lengths; `--frames` caps each video, so one ends before the other.
    let (a, na) = make_counted_video(dir.path(), "a.mp4", "0.3");
    let (b, nb) = make_counted_video(dir.path(), "b.mp4", "0.5");
    let frames = 12u64;
    let expected = [na.min(frames), nb.min(frames)];
    assert!(expected[0] < expected[1], "the videos differ in length: {expected:?}");
    let json = dir.path().join("m.json");
    let o = run(bin().args([
        "bench",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--model",
        "person-detector",
        "--model",
        "centerface",
        "--mode",
        "all",
        "--frames",
        &frames.to_string(),
        "--json",
        json.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("join: result p50"), "the summary shows the join against the slowest branch:\n{text}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let total = expected.iter().sum::<u64>();
    for mode in ["serial", "pipelined", "pool", "per-model"] {
        let m = &v[mode];
        assert_eq!(m["mode"], mode);
        assert_eq!(
            (m["frames_out"].as_u64(), m["processed"].as_u64(), m["lost"].as_u64()),
            (Some(total), Some(total), Some(0)),
            "{mode}"
        );
        let streams = m["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2, "{mode}");
        let mut stream_reordered = 0;
        for (i, (s, path)) in streams.iter().zip([&a, &b]).enumerate() {
            assert_eq!(s["id"].as_u64(), Some(i as u64), "{mode}");
            assert_eq!(s["source"].as_str(), path.to_str(), "{mode}");
            assert_eq!(s["frames_out"].as_u64(), Some(expected[i]), "{mode}: stream {i}");
            assert_eq!(s["dropped"].as_u64(), Some(0), "{mode}: stream {i}");
            stream_reordered += s["reordered"].as_u64().unwrap();
        }
        if mode == "pool" {
            // Unordered by design: what is late in a stream is late overall.
            assert!(stream_reordered <= m["out_of_order"]["count"].as_u64().unwrap(), "{mode}");
        } else {
            assert_eq!(stream_reordered, 0, "{mode}: each stream in its own order");
            assert_eq!((m["reordered"].as_u64(), m["out_of_order"]["count"].as_u64()), (Some(0), Some(0)), "{mode}");
        }
        let branches = m["branches"].as_array().unwrap();
        assert_eq!(branches.len(), 2, "{mode}");
        for (br, file) in branches.iter().zip(["person-yolov8s.onnx", "centerface.onnx"]) {
            assert!(br["model"].as_str().unwrap().ends_with(file), "{mode}: {br}");
            let (p50, p99) = (br["latency_us"]["p50"].as_f64().unwrap(), br["latency_us"]["p99"].as_f64().unwrap());
            assert!(p50.is_finite() && p50 > 0.0 && p50 <= p99, "{mode}: {br}");
            assert!(p99 <= m["latency_us"]["max"].as_f64().unwrap(), "{mode}: a branch ends before its frame's result");
            assert_eq!(br["errored"].as_u64(), Some(0), "{mode}: {br}");
        }
        let join = m["join_overhead_us"]["p50"].as_f64().unwrap();
        assert!(join.is_finite() && join >= 0.0, "{mode}: {join}");
        // Stages: a source per stream (the runtime) or one decoder, then pre, infer, post per model.
        let names: Vec<&str> = m["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"infer:person-yolov8s") && names.contains(&"infer:centerface"), "{mode}: {names:?}");
    }
    let p = &v["pipelined"];
    let sources = p["stages"].as_array().unwrap().iter().filter(|s| s["source"] == true).count();
    assert_eq!(sources, 2, "one source per video");
}
