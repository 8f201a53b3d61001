//! The perception-node example (`examples/perception_node.rs`) run as a process, as CI runs it: on the
//! file config it prints ordered results with detections and a summary; SIGTERM stops it cleanly.

mod camera_peer;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use camera_peer::{heavy, sample_video, within};

/// The example binary `cargo test` built next to this test (`target/<profile>/examples/`).
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let p = dir.join("examples").join("perception_node");
    assert!(
        p.exists(),
        "{} is missing: `cargo test -p framepipe-app` builds it (or `cargo build --examples`)",
        p.display()
    );
    p
}

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

struct Line {
    seq: u64,
    captured: f64,
    detections: usize,
    stages: Vec<String>,
}

fn parse(stdout: &str) -> (Vec<Line>, Vec<String>, Option<String>) {
    let (mut results, mut dets, mut summary) = (Vec::new(), Vec::new(), None);
    for l in stdout.lines() {
        let field = |k: &str| l.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string));
        if l.starts_with("result ") {
            results.push(Line {
                seq: field("seq").unwrap().parse().unwrap(),
                captured: field("captured").unwrap().parse().unwrap(),
                detections: field("detections").map_or(0, |d| d.parse().unwrap()),
                stages: field("stages")
                    .map_or(vec![], |s| s.split(',').map(|x| x.split(':').next().unwrap().to_string()).collect()),
            });
        } else if let Some(d) = l.trim_start().strip_prefix("det ") {
            dets.push(d.to_string());
        } else if l.starts_with("summary ") {
            summary = Some(l.to_string());
        }
    }
    (results, dets, summary)
}

#[test]
fn the_example_prints_ordered_results_with_detections_on_the_file_config() {
    let _g = heavy();
    let exe = example();
    // The shipped config reads ../assets/sample.mp4: make sure it is there.
    sample_video();
    let out = within(Duration::from_secs(120), move || {
        Command::new(exe).arg(configs().join("perception-node.toml")).output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}\n{stderr}\n{stdout}", out.status);
    let (results, dets, summary) = parse(&stdout);
    assert!(results.len() >= 3, "{stdout}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.seq, i as u64, "in order, without holes");
        assert_eq!(r.stages, ["pre", "infer", "post"]);
    }
    assert!(results.windows(2).all(|w| w[0].captured < w[1].captured), "capture times increase");
    // Wall-clock capture times are now-ish.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - results[0].captured).abs() < 300.0);
    assert!(results.iter().filter(|r| r.detections > 0).count() * 2 >= results.len(), "{stdout}");
    assert_eq!(dets.len(), results.iter().map(|r| r.detections).sum::<usize>());
    assert!(dets.iter().all(|d| d.starts_with("Normal ") || d.starts_with("Fall ")), "{dets:?}");
    let summary = summary.expect("a summary line");
    assert!(summary.contains("end=source-ended") && summary.contains("captured=150"), "{summary}");
    assert!(summary.contains(&format!("processed={}", results.len())), "{summary}");
}

#[test]
fn sigterm_stops_the_example_cleanly() {
    let _g = heavy();
    let exe = example();
    // The same video without a frame limit: it would play for 10 s.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, format!("[source]\nuri = {:?}\nrealtime = true\n", sample_video().display().to_string()))
        .unwrap();
    let out = within(Duration::from_secs(120), move || {
        let child = Command::new(exe).arg(&cfg).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        std::thread::sleep(Duration::from_secs(4));
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        child.wait_with_output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}\n{stderr}\n{stdout}", out.status);
    let (results, _, summary) = parse(&stdout);
    let summary = summary.expect("a summary line after the signal");
    assert!(summary.contains("end=signal"), "{summary}");
    assert!(summary.contains(&format!("admitted={}", results.len())), "every admitted frame was delivered: {summary}");
    assert!(!summary.contains("captured=300"), "stopped early: {summary}");
}

#[test]
fn a_bad_config_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[pipeline]\nadmission = \"sometimes\"\n").unwrap();
    let out = Command::new(example()).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipeline.admission") && stderr.contains("sometimes"), "{stderr}");
}
