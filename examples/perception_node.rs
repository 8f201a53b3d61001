//! A perception node, as a robot would embed framepipe: build the pipeline from a config file,
//! receive detections in capture order, stop cleanly on SIGINT or SIGTERM.
//!
//! ```text
//! cargo run --release -p framepipe-app --example perception_node -- configs/perception-node.toml
//! ```
//!
//! One line per result (sequence number, wall-clock capture time, latency, detections, per-stage
//! times), then a summary line; the exit status is 0 unless the source failed (3) or the
//! configuration is refused (2). The config format is in `docs/config.md`.

use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use framepipe_app::config::NodeConfig;
use framepipe_app::node::{NodeResult, PerceptionNode};

fn main() -> ExitCode {
    framepipe_video::quiet_opencv_logs();
    let path = std::env::args().nth(1).unwrap_or_else(|| "configs/perception-node.toml".into());
    match run(&path) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(path: &str) -> Result<ExitCode, framepipe_app::AppError> {
    let cfg = NodeConfig::from_file(path.as_ref())?;
    let mut node = PerceptionNode::start(&cfg)?;
    node.stop_on_signals()?;
    let (model, engine) = node.model();
    eprintln!("perception node: {} -> {} ({engine}); SIGINT or SIGTERM stops it", node.source().uri, model);
    let labels = node.labels().clone();
    // The callback form; `for r in node.results() { … }` works the same.
    let report = node.run(|r: NodeResult| {
        let captured = r.captured_wall().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let stages: Vec<String> =
            r.stages().map(|s| format!("{}:{:.1}", s.name, s.service().as_secs_f64() * 1e3)).collect();
        match r.error() {
            None => {
                println!(
                    "result seq={} captured={captured:.6} latency_ms={:.1} camera_lag_ms={} detections={} stages={}",
                    r.seq(),
                    r.latency().as_secs_f64() * 1e3,
                    r.camera_lag().map_or("-".into(), |l| format!("{:.1}", l.as_secs_f64() * 1e3)),
                    r.detections().len(),
                    stages.join(",")
                );
                for d in r.detections() {
                    let b = &d.bbox;
                    println!(
                        "  det {} {:.2} [{:.0}, {:.0}, {:.0}, {:.0}]",
                        labels.label(d.class_id),
                        d.score,
                        b.x1,
                        b.y1,
                        b.x2,
                        b.y2
                    );
                }
            }
            Some(e) => println!("result seq={} captured={captured:.6} error=\"{e}\"", r.seq()),
        }
    })?;
    println!(
        "summary end={} captured={} admitted={} dropped={} processed={} skipped={} errored={} latency_p50_ms={:.1} latency_p99_ms={:.1}",
        report.end.name(),
        report.captured,
        report.admitted,
        report.dropped,
        report.processed,
        report.skipped,
        report.errored,
        report.latency_us.p50 / 1e3,
        report.latency_us.p99 / 1e3
    );
    if let Some(e) = &report.error {
        eprintln!("error: {e}");
    }
    Ok(if report.end.is_failure() { ExitCode::from(3) } else { ExitCode::SUCCESS })
}
