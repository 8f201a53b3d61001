//! `framepipe camera`: run the perception node on a camera, a stream or a file played like one, print
//! the report, serve the annotated view. Argument handling only; the node is `framepipe-app`'s.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use framepipe_app::camera::{plot_latency, CameraReport};
use framepipe_app::config::NodeConfig;
use framepipe_app::node::PerceptionNode;
use framepipe_app::stages::{Pins, Replicas};

/// Exit status when the source died or stalled (after the frames in flight were drained).
pub const EXIT_SOURCE_FAILED: u8 = 3;
/// Exit status when shutdown had to leave pipeline threads behind.
pub const EXIT_PIPELINE_HUNG: u8 = 4;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AdmissionArg {
    /// The newest frame replaces waiting ones (default: a live camera).
    KeepLatest,
    /// Drop the oldest waiting frame.
    DropOldest,
    /// Wait for room (frames pile up in the camera's buffers: latency grows).
    Block,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EngineArg {
    /// ONNX Runtime if its library is present, else tract.
    Auto,
    /// ONNX Runtime.
    Ort,
    /// tract (pure Rust).
    Tract,
    /// tract-cuda (needs the `cuda` feature).
    TractCuda,
}

/// `framepipe camera`.
#[derive(clap::Args)]
#[command(after_help = "Exit status: 0 when the source ended, the duration passed or a signal stopped it; \
2 for a bad argument, config or source that cannot be opened; 3 when the source died or stalled \
(after the frames in flight were drained); 4 when shutdown had to leave pipeline threads behind.")]
pub struct CameraArgs {
    /// The source: /dev/videoN or N (V4L2), an rtsp://, http://, tcp:// URL (e.g. an MJPEG stream),
    /// a GStreamer pipeline ending in appsink, or a video file (add --realtime to play it like a
    /// camera). Give it several times for several sources, one stream each, in one pipeline
    /// (shared inference replicas, round-robin admission, per-stream report).
    #[arg(long, required_unless_present_any = ["config", "plot_reports"])]
    source: Vec<String>,
    /// A node config file (configs/*.toml); the flags given here override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The ONNX model (default: the fetched person detector).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The engine [default: auto].
    #[arg(long, value_enum)]
    engine: Option<EngineArg>,
    /// Threads per inference session [default: 1].
    #[arg(long)]
    threads: Option<usize>,
    /// Confidence threshold [default: 0.25].
    #[arg(long)]
    conf: Option<f32>,
    /// What enters the pipeline when it is busy [default: keep-latest].
    #[arg(long, value_enum)]
    admission: Option<AdmissionArg>,
    /// Skip frames older than N ms when they reach a stage (counted as skipped).
    #[arg(long, value_name = "N")]
    deadline_ms: Option<u64>,
    /// Replicas per stage, `infer=N[,pre=N,post=N]` [default: 1 each].
    #[arg(long)]
    replicas: Option<String>,
    /// Pin stages to cores, e.g. `capture=0,infer=1` (also pre, post; ranges a-b).
    #[arg(long)]
    pin: Option<String>,
    /// Capacity of every queue [default: 1].
    #[arg(long)]
    queue: Option<usize>,
    /// Cap on frames in flight [default: the inference replicas under keep-latest and drop-oldest,
    /// what the queues hold under block].
    #[arg(long, value_name = "N")]
    max_in_flight: Option<usize>,
    /// Serve the annotated frames as MJPEG with a live-stats page [default address: 127.0.0.1:8080;
    /// port 0 picks a free one].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    serve: Option<String>,
    /// Allow --serve on a non-loopback address (the view then shows the camera to the network).
    #[arg(long)]
    allow_remote: bool,
    /// Stop after S seconds (default: when the source ends, or on SIGINT/SIGTERM).
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Stop after N frames.
    #[arg(long, value_name = "N")]
    max_frames: Option<u64>,
    /// Play a video file at its frame rate, like a camera.
    #[arg(long)]
    realtime: bool,
    /// Which media backend decodes: native first then OpenCV where built in (auto), or one of them.
    #[arg(long, value_enum)]
    decoder: Option<crate::DecoderArg>,
    /// Reopen a live source that dies, up to N times in a row, with backoff [N default: 10].
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10")]
    reconnect: Option<u32>,
    /// A network stream read that gets no data for this long ends the stream [default: 5000].
    #[arg(long, value_name = "MS")]
    read_timeout_ms: Option<u64>,
    /// Any read that has not returned after this long is a stall [default: 10000].
    #[arg(long, value_name = "MS")]
    stall_timeout_ms: Option<u64>,
    /// Latency window length in the report, seconds [default: 10].
    #[arg(long, value_name = "S")]
    window_s: Option<f64>,
    /// Write the JSON report here (`-`: stdout).
    #[arg(long, value_name = "PATH|-")]
    json: Option<String>,
    /// Keep every processed frame's latency in the report (`series`), for plots.
    #[arg(long)]
    series: bool,
    /// Write a PNG of latency over time (this run's, or those of --plot-reports).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Do not run: plot these reports (written with --series) into --plot, one curve each
    /// (`path` or `label=path`, comma-separated).
    #[arg(long, value_delimiter = ',', requires = "plot")]
    plot_reports: Vec<String>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Measure the stages at start and choose replicas, pins, threads and queues (`pipeline.tune`).
    #[arg(long)]
    tune: bool,
}

impl CameraArgs {
    /// The node config: the file's (or the defaults), with the flags given applied over it.
    fn config(&self) -> Result<NodeConfig> {
        let mut cfg = match &self.config {
            Some(p) => NodeConfig::from_file(p)?,
            None => NodeConfig::default(),
        };
        if let Some((first, more)) = self.source.split_first() {
            cfg.source.uri = first.clone();
            cfg.source.extra = more.to_vec();
        }
        if self.realtime {
            cfg.source.realtime = true;
        }
        if let Some(d) = self.decoder {
            cfg.source.decoder = d.choice().to_string();
        }
        if let Some(n) = self.max_frames {
            cfg.source.max_frames = Some(n);
        }
        if let Some(n) = self.reconnect {
            cfg.source.reconnect.attempts = n;
        }
        if let Some(ms) = self.read_timeout_ms {
            cfg.source.read_timeout_ms = ms;
        }
        if let Some(ms) = self.stall_timeout_ms {
            cfg.source.stall_timeout_ms = ms;
        }
        if let Some(m) = &self.model {
            cfg.model.path = Some(m.clone());
        }
        if let Some(e) = self.engine {
            cfg.model.engine = match e {
                EngineArg::Auto => "auto",
                EngineArg::Ort => "ort",
                EngineArg::Tract => "tract",
                EngineArg::TractCuda => "tract-cuda",
            }
            .into();
        }
        if let Some(t) = self.threads {
            cfg.model.threads = t;
        }
        if let Some(c) = self.conf {
            cfg.model.conf = c;
        }
        if let Some(a) = self.admission {
            cfg.pipeline.admission = match a {
                AdmissionArg::KeepLatest => "keep-latest",
                AdmissionArg::DropOldest => "drop-oldest",
                AdmissionArg::Block => "block",
            }
            .into();
        }
        if let Some(d) = self.deadline_ms {
            cfg.pipeline.deadline_ms = Some(d);
        }
        if let Some(r) = &self.replicas {
            let r: Replicas = r.parse()?;
            cfg.pipeline.replicas.pre = r.pre;
            cfg.pipeline.replicas.infer = r.infer;
            cfg.pipeline.replicas.post = r.post;
        }
        if let Some(p) = &self.pin {
            let p: Pins = p.replace("capture=", "decode=").parse()?;
            cfg.pipeline.pins.capture = p.decode;
            cfg.pipeline.pins.pre = p.pre;
            cfg.pipeline.pins.infer = p.infer;
            cfg.pipeline.pins.post = p.post;
        }
        if let Some(q) = self.queue {
            cfg.pipeline.queue = q;
        }
        if self.tune {
            cfg.pipeline.tune = true;
        }
        if let Some(n) = self.max_in_flight {
            cfg.pipeline.max_in_flight = Some(n);
        }
        if let Some(addr) = &self.serve {
            cfg.serve.enabled = true;
            cfg.serve.addr = addr.clone();
        }
        if self.allow_remote {
            cfg.serve.allow_remote = true;
        }
        if let Some(d) = self.duration {
            cfg.run.duration_s = Some(d);
        }
        if let Some(w) = self.window_s {
            cfg.run.window_s = w;
        }
        if self.series || (self.plot.is_some() && self.plot_reports.is_empty()) {
            cfg.run.series = true;
        }
        Ok(cfg)
    }
}

/// Runs `framepipe camera`.
pub fn run(a: CameraArgs) -> Result<ExitCode> {
    if !a.plot_reports.is_empty() {
        return plot_reports(&a);
    }
    let cfg = a.config()?;
    let resolved = cfg.resolve()?;
    if let Some(addr) = cfg.serve.enabled.then_some(&resolved.serve).and_then(|s| s.as_ref()).map(|s| s.addr) {
        if !addr.ip().is_loopback() {
            eprintln!("warning: serving the camera view on {addr}: anyone who can reach this address can watch it");
        }
    }
    let any_file = resolved.sources().any(|s| !s.is_live());
    if any_file && !resolved.realtime && cfg.run.duration_s.is_none() {
        eprintln!(
            "note: a file without --realtime is read as fast as it decodes; add --realtime to play it like a camera"
        );
    }
    let mut node = PerceptionNode::start(&cfg)?;
    node.stop_on_signals()?;
    for (i, src) in node.sources().iter().enumerate() {
        eprintln!(
            "camera{}: {} ({}x{}{}, {})",
            if node.sources().len() > 1 { format!(" stream {i}") } else { String::new() },
            src.uri,
            src.width,
            src.height,
            src.fps.map_or(String::new(), |f| format!(" @ {f:.1} fps")),
            src.backend,
        );
    }
    eprintln!("admission {}, stages {}", cfg.pipeline.admission, node.stage_names().join(" -> "));
    if let Some(t) = node.tuned() {
        eprint!("{}", t.render());
    }
    if let Some(url) = node.view_url() {
        eprintln!("view: {url} (MJPEG: {url}stream.mjpg, stats: {url}stats)");
    }
    let mut next_line = Instant::now() + Duration::from_secs(5);
    while let Some(_result) = node.next_result() {
        if !a.quiet && Instant::now() >= next_line {
            next_line += Duration::from_secs(5);
            let s = node.live_stats();
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
            eprintln!(
                "[{:>6.1} s] {}: camera {:.1} fps, results {:.2} fps, latency p50 {} ms p99 {} ms; captured {} dropped {} processed {} skipped {} errored {}",
                s.uptime_s,
                s.state,
                s.camera_fps,
                s.fps,
                ms(s.latency_p50_ms),
                ms(s.latency_p99_ms),
                s.captured,
                s.dropped,
                s.processed,
                s.skipped,
                s.errored
            );
        }
    }
    let report = node.finish()?;
    let text = report.render();
    if a.json.as_deref() == Some("-") {
        eprint!("{text}");
    } else {
        print!("{text}");
        std::io::stdout().flush().ok();
    }
    if let Some(target) = &a.json {
        let json = serde_json::to_string_pretty(&report)?;
        if target == "-" {
            println!("{json}");
        } else {
            std::fs::write(target, json + "\n").with_context(|| format!("writing {target}"))?;
        }
    }
    if let Some(path) = &a.plot {
        let label = report.admission.clone();
        plot_latency(&[(label, report.clone())], path)?;
        eprintln!("plot: {}", path.display());
    }
    if report.end.is_failure() {
        eprintln!("error: {}", report.error.as_deref().unwrap_or("the source failed"));
        eprintln!("(the frames already in the pipeline were drained and counted; lost {})", report.lost);
        return Ok(ExitCode::from(EXIT_SOURCE_FAILED));
    }
    if let Some(e) = &report.error {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_PIPELINE_HUNG));
    }
    Ok(ExitCode::SUCCESS)
}

fn plot_reports(a: &CameraArgs) -> Result<ExitCode> {
    let Some(out) = &a.plot else { bail!("--plot-reports needs --plot PATH") };
    let mut runs = Vec::new();
    for item in &a.plot_reports {
        let (label, path) = match item.split_once('=') {
            Some((l, p)) => (Some(l.to_string()), PathBuf::from(p)),
            None => (None, PathBuf::from(item)),
        };
        let report = CameraReport::from_file(&path)?;
        runs.push((label.unwrap_or_else(|| report.admission.clone()), report));
    }
    plot_latency(&runs, out)?;
    eprintln!("plot: {}", out.display());
    Ok(ExitCode::SUCCESS)
}
