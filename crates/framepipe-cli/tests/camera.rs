//! `framepipe camera` end to end: the report on a file played like a camera, a stream that dies, a
//! signal, and arguments that are refused with the cause named.

mod common;
use common::{bin, sample_video};

use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs that run a model take turns (two at once on a 2-core machine would measure each other).
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn sample() -> String {
    sample_video().display().to_string()
}

/// Runs the command, killing it (and failing) after `limit`.
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
            panic!("framepipe camera did not finish within {limit:?}");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn have(program: &str) -> bool {
    Command::new(program).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether something listens on 127.0.0.1:`port`, read from /proc (a one-client peer would take a
/// probe connection for its client).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
    })
}

/// An ffmpeg MJPEG-over-HTTP peer looping the sample on a free port, listening when this returns,
/// killed after `after` by the returned thread (join it).
fn mjpeg_peer_killed_after(after: Duration) -> (u16, std::thread::JoinHandle<()>) {
    let port = free_port();
    let mut peer = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", &sample()])
        .args(["-an", "-vf", "scale=640:360", "-c:v", "mjpeg", "-q:v", "6", "-f", "mpjpeg", "-listen", "1"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !listening(port) {
        assert!(t.elapsed() < Duration::from_secs(20), "ffmpeg never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killer = std::thread::spawn(move || {
        std::thread::sleep(after);
        let _ = peer.kill();
        let _ = peer.wait();
    });
    (port, killer)
}

/// Checks the documented keys and the counting rules.
fn check_report(v: &Value) {
    for k in [
        "captured",
        "admitted",
        "dropped",
        "skipped",
        "errored",
        "processed",
        "latency_us",
        "latency_windows",
        "stages",
    ] {
        assert!(v.get(k).is_some(), "the report has `{k}`: {v:#}");
    }
    for k in ["p50", "p90", "p99", "max"] {
        assert!(v["latency_us"][k].is_number(), "latency_us.{k}");
    }
    let n = |k: &str| v[k].as_u64().unwrap();
    assert_eq!(n("captured"), n("admitted") + n("dropped"));
    assert_eq!(n("admitted"), n("processed") + n("skipped") + n("errored"));
    let windows = v["latency_windows"].as_array().unwrap();
    assert!(!windows.is_empty());
    for w in windows {
        assert!(w.get("p99_us").is_some() && w["start_s"].is_number() && w["end_s"].is_number(), "{w}");
    }
    let stages: Vec<&str> = v["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    // The sources first (`decode`, or `decode0`, `decode1`, … for several), then the stages.
    let sources = stages.iter().take_while(|s| s.starts_with("decode")).count();
    assert_eq!(sources, v["streams"].as_array().map_or(1, |s| s.len()).max(1), "{stages:?}");
    assert_eq!(&stages[sources..sources + 3], ["pre", "infer", "post"]);
}

#[test]
fn a_file_played_like_a_camera_gives_the_documented_report() {
    let _g = heavy();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("camera.json");
    let mut cmd = bin();
    cmd.args(["camera", "--source", &sample(), "--realtime", "--max-frames", "90", "--window-s", "1", "--json"])
        .arg(&json);
    let o = run_within(cmd, Duration::from_secs(120));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("captured 90 = admitted") && out.contains("ended: source-ended"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_report(&v);
    assert_eq!(v["captured"], 90);
    assert_eq!(v["admission"], "keep-latest", "the default");
    assert!(v["dropped"].as_u64().unwrap() > 0, "a 30 fps camera outruns the detector");
    assert_eq!(v["end"], "source-ended");
    assert!(v["latency_windows"].as_array().unwrap().len() >= 2, "1 s windows over 3 s");
}

/// Checks one stream's entry of the report: its keys and its counting rules.
fn check_stream(t: &Value) {
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("stream `{k}`: {t:#}"));
    assert_eq!(n("captured"), n("admitted") + n("dropped"), "{t:#}");
    assert_eq!(n("admitted"), n("frames_out"), "drained: every admitted frame came out: {t:#}");
    assert_eq!(n("frames_out"), n("processed") + n("skipped") + n("errored"), "{t:#}");
    assert_eq!(n("reordered"), 0, "{t:#}");
    assert!(t["source"]["uri"].is_string() && t["end"].is_string() && t["latency_us"]["p99"].is_number(), "{t:#}");
}

#[test]
fn two_cameras_share_one_pipeline_and_are_served_in_turn() {
    let _g = heavy();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("camera.json");
    let mut cmd = bin();
    cmd.args(["camera", "--source", &sample(), "--source", &sample(), "--realtime", "--max-frames", "90", "--json"])
        .arg(&json);
    let o = run_within(cmd, Duration::from_secs(120));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(err.contains("camera stream 0:") && err.contains("camera stream 1:"), "{err}");
    assert!(out.contains("stream 0 ") && out.contains("stream 1 "), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_report(&v);
    let streams = v["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{v:#}");
    for (i, t) in streams.iter().enumerate() {
        check_stream(t);
        assert_eq!(t["id"], i as u64);
        assert_eq!(t["captured"], 90, "each source read its own 90 frames");
        assert_eq!(t["end"], "source-ended");
    }
    // The totals are the sums of the streams.
    for k in ["captured", "dropped", "processed"] {
        let sum: u64 = streams.iter().map(|t| t[k].as_u64().unwrap()).sum();
        assert_eq!(v[k].as_u64().unwrap(), sum, "{k}");
    }
    // Two 30 fps cameras outrun the detector: keep-latest drops, and round-robin admission serves
    // the two in turn, so neither gets ahead of the other by more than a frame or two.
    let p: Vec<u64> = streams.iter().map(|t| t["processed"].as_u64().unwrap()).collect();
    assert!(p[0] >= 3 && p[1] >= 3, "{p:?}");
    assert!(p[0].abs_diff(p[1]) <= 2, "unfair: processed {p:?}");
}

#[test]
fn a_camera_that_dies_among_two_ends_its_own_stream_only() {
    if !have("ffmpeg") {
        eprintln!("skipped: ffmpeg is not installed (scripts/setup.sh installs it)");
        return;
    }
    let _g = heavy();
    let (port, killer) = mjpeg_peer_killed_after(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("camera.json");
    let mut cmd = bin();
    let url = format!("http://127.0.0.1:{port}/");
    // The file plays for 6 s (180 frames at 30 fps): it goes on after the stream dies at 3 s.
    cmd.args(["camera", "--source", &url, "--source", &sample(), "--realtime", "--max-frames", "180", "--json"])
        .arg(&json);
    let o = run_within(cmd, Duration::from_secs(120));
    killer.join().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "a source failed: {err}");
    assert!(err.contains(&format!("stream 0 ({url})")), "the failure names its stream: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_report(&v);
    assert_eq!(v["end"], "source-died");
    assert_eq!(v["lost"], 0);
    let streams = v["streams"].as_array().unwrap();
    streams.iter().for_each(check_stream);
    assert_eq!(streams[0]["end"], "source-died");
    assert_eq!(streams[0]["errored"], 1, "the dead read is counted on its stream");
    assert!(streams[0]["error"].as_str().unwrap().contains("stopped delivering frames"), "{:#}", streams[0]);
    assert_eq!(streams[1]["end"], "source-ended");
    assert_eq!(streams[1]["captured"], 180, "the file played to its end after the stream died");
    assert_eq!(streams[1]["errored"], 0);
}

#[test]
fn a_stream_killed_mid_run_exits_3_with_the_cause_after_draining() {
    if !have("ffmpeg") {
        eprintln!("skipped: ffmpeg is not installed (scripts/setup.sh installs it)");
        return;
    }
    let _g = heavy();
    let (port, killer) = mjpeg_peer_killed_after(Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("camera.json");
    let mut cmd = bin();
    cmd.args(["camera", "--source", &format!("http://127.0.0.1:{port}/"), "--json"]).arg(&json);
    let o = run_within(cmd, Duration::from_secs(90));
    killer.join().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains(&format!("error: video source http://127.0.0.1:{port}/ stopped delivering frames")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_report(&v);
    assert_eq!(v["end"], "source-died");
    assert_eq!(v["source_errors"], 1);
    assert_eq!(v["lost"], 0, "the frames in flight were drained");
    assert!(v["processed"].as_u64().unwrap() >= 1);
}

#[test]
fn sigterm_drains_prints_the_report_and_exits_0() {
    let _g = heavy();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("camera.json");
    let mut cmd = bin();
    cmd.args(["camera", "--source", &sample(), "--realtime", "--json"]).arg(&json);
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let id = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(4));
        let _ = Command::new("kill").args(["-TERM", &id]).status();
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let o = rx.recv_timeout(Duration::from_secs(90)).expect("exits after SIGTERM").unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_report(&v);
    assert_eq!(v["end"], "signal");
    assert!(v["captured"].as_u64().unwrap() < 300, "stopped before the video's end");
}

#[test]
fn bad_arguments_are_refused_with_the_cause_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--source".into(), "/no/such/clip.mp4".into()], "/no/such/clip.mp4"),
        (vec!["--source".into(), "videotestsrc ! fakesink".into()], "appsink"),
        (vec!["--source".into(), sample(), "--serve".into(), "0.0.0.0:8080".into()], "--allow-remote"),
        (vec!["--source".into(), sample(), "--deadline-ms".into(), "0".into()], "pipeline.deadline_ms"),
        (vec!["--source".into(), sample(), "--replicas".into(), "infer=0".into()], "infer=0"),
        (vec!["--source".into(), sample(), "--reconnect".into()], "live source"),
        (vec!["--config".into(), dir.path().join("missing.toml").display().to_string()], "missing.toml"),
    ];
    for (args, needle) in cases {
        let mut cmd = bin();
        cmd.arg("camera").args(&args);
        let o = run_within(cmd, Duration::from_secs(60));
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        let line = err.lines().rfind(|l| l.starts_with("error")).unwrap_or_default();
        assert!(line.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"));
    }
    // clap refuses what it parses.
    let o = run_within(
        {
            let mut c = bin();
            c.args(["camera", "--source", "0", "--admission", "sometimes"]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("keep-latest"), "{}", text(&o.stderr));
    // A config file's unknown field.
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[source]\nurl = \"0\"\n").unwrap();
    let o = run_within(
        {
            let mut c = bin();
            c.args(["camera", "--config"]).arg(&cfg);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown field `url`"), "{}", text(&o.stderr));
}

#[test]
fn serving_a_remote_address_needs_the_flag_and_then_warns() {
    let _g = heavy();
    let mut cmd = bin();
    cmd.args([
        "camera",
        "--source",
        &sample(),
        "--realtime",
        "--max-frames",
        "15",
        "--serve",
        "0.0.0.0:0",
        "--allow-remote",
    ]);
    let o = run_within(cmd, Duration::from_secs(90));
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: serving the camera view on 0.0.0.0"), "{err}");
    assert!(err.contains("view: http://0.0.0.0:"), "{err}");
}
