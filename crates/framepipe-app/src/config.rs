//! Perception-node configuration files (`configs/*.toml`): source, model, pipeline, view, run.
//!
//! Every field is optional and has a documented default (`docs/config.md`); an unknown field or a
//! bad value is an error that names the field. Relative paths (a video file, the model, a labels
//! file) are relative to the directory of the config file.
//!
//! ```
//! use framepipe_app::config::NodeConfig;
//! let cfg = NodeConfig::from_toml_str(
//!     r#"
//!     [source]
//!     uri = "rtsp://10.0.0.7/stream"
//!     reconnect = { attempts = 5 }
//!     [pipeline]
//!     admission = "keep-latest"
//!     deadline_ms = 500
//!     replicas = { infer = 2 }
//!     "#,
//! )
//! .unwrap();
//! assert_eq!(cfg.pipeline.replicas.infer, 2);
//! assert_eq!(cfg.pipeline.replicas.pre, 1); // a default
//! assert!(NodeConfig::from_toml_str("[pipeline]\nadmision = \"block\"").unwrap_err().to_string().contains("admision"));
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use framepipe::Admission;
use framepipe_infer::EngineChoice;
use framepipe_video::mjpeg::MjpegOptions;
use framepipe_video::{OpenOptions, SourceSpec};
use serde::{Deserialize, Serialize};

use crate::stages::{Pins, PipelineOptions, Replicas};
use crate::{AppError, ModelOptions};

/// A perception node's whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where frames come from.
    pub source: SourceSection,
    /// The detection model.
    pub model: ModelSection,
    /// How the pipeline runs.
    pub pipeline: PipelineSection,
    /// The MJPEG view (off by default).
    pub serve: ServeSection,
    /// How long to run, how to stop, what to record.
    pub run: RunSection,
}

/// `[source]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceSection {
    /// A V4L2 device (`/dev/video0` or `0`), a URL (`rtsp://`, `http://`, `tcp://`, …), a GStreamer
    /// pipeline ending in `appsink`, or a video file. Default `/dev/video0`.
    pub uri: String,
    /// More sources, one stream each: `uri` is stream 0, `extra[i]` is stream `i + 1` (default none).
    /// They share one pipeline (weights loaded once, inference replicas shared, round-robin
    /// admission) and every other source setting.
    pub extra: Vec<String>,
    /// For a file: read it at its frame rate, like a camera (default false: as fast as it decodes).
    pub realtime: bool,
    /// Stop after this many frames (default: no limit).
    pub max_frames: Option<u64>,
    /// Longest time opening a network stream may take, in ms (default 10000).
    pub open_timeout_ms: u64,
    /// Longest time one read from a network stream may wait for data, in ms (default 5000).
    pub read_timeout_ms: u64,
    /// Longest time any read may take before the source is declared stalled, in ms (default 10000).
    /// It covers the sources the read timeout does not (GStreamer pipelines, cameras).
    pub stall_timeout_ms: u64,
    /// Which media backend decodes: `auto` (default: native first, then OpenCV where it is built
    /// in), `native` or `opencv`.
    pub decoder: String,
    /// What to do when a live source dies.
    pub reconnect: ReconnectSection,
}

impl Default for SourceSection {
    fn default() -> Self {
        SourceSection {
            uri: "/dev/video0".into(),
            extra: Vec::new(),
            realtime: false,
            max_frames: None,
            open_timeout_ms: 10_000,
            read_timeout_ms: 5_000,
            stall_timeout_ms: 10_000,
            decoder: "auto".into(),
            reconnect: ReconnectSection::default(),
        }
    }
}

/// `[source.reconnect]`: reopen a live source that died, with exponential backoff.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconnectSection {
    /// Attempts in a row before giving up (default 0: do not reconnect; the node reports the dead
    /// source and ends). The count starts again after a reconnection that delivers a frame.
    pub attempts: u32,
    /// Wait before the first attempt, in ms (default 500); doubled after each failed attempt.
    pub backoff_ms: u64,
    /// Longest wait between attempts, in ms (default 8000).
    pub max_backoff_ms: u64,
}

impl Default for ReconnectSection {
    fn default() -> Self {
        ReconnectSection { attempts: 0, backoff_ms: 500, max_backoff_ms: 8_000 }
    }
}

/// `[model]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// The ONNX model (default: the fetched person detector, `assets/models/person-yolov8s.onnx`).
    pub path: Option<PathBuf>,
    /// `auto` (ONNX Runtime if its library is found, else tract), `ort`, `tract` or `tract-cuda`
    /// (default `auto`).
    pub engine: String,
    /// Threads per inference session (default 1).
    pub threads: usize,
    /// Confidence threshold (default 0.25).
    pub conf: f32,
    /// NMS IoU threshold (default 0.45).
    pub iou: f32,
    /// A labels file, one name per line (default: the model's own class names).
    pub labels: Option<PathBuf>,
    /// tract-cuda: one CUDA graph per replica, captured at start-up (default true); `false` runs
    /// tract's plain `state.run` (the `--no-cuda-graph` fallback).
    pub cuda_graph: bool,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            path: None,
            engine: "auto".into(),
            threads: 1,
            conf: 0.25,
            iou: 0.45,
            labels: None,
            cuda_graph: true,
        }
    }
}

/// `[pipeline]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSection {
    /// What the entrance does when the pipeline is busy: `keep-latest` (default: the newest frame
    /// replaces waiting ones), `drop-oldest`, or `block` (wait; the camera's buffers fill).
    pub admission: String,
    /// Skip frames older than this (capture to stage entry), in ms (default: no deadline).
    pub deadline_ms: Option<u64>,
    /// Capacity of every queue (default 1).
    pub queue: usize,
    /// Cap on frames numbered and not yet delivered. Default: under `keep-latest` and
    /// `drop-oldest`, the number of inference replicas (a frame is taken from the camera only when a
    /// replica can start on it, so nothing waits inside the pipeline and results are as fresh as
    /// the model allows); under `block`, what the stages and queues hold (throughput first).
    pub max_in_flight: Option<usize>,
    /// Replicas per stage.
    pub replicas: ReplicasSection,
    /// Cores per stage.
    pub pins: PinsSection,
    /// Draw the detections onto the frames (default false; always on while serving the view).
    pub annotate: bool,
    /// Measure the stages at start and choose replicas, pins, threads per session and queues
    /// (`framepipe_app::tune`); the replicas, pins, queue and `max_in_flight` given are then
    /// replaced by the plan's (default false).
    pub tune: bool,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            admission: "keep-latest".into(),
            deadline_ms: None,
            queue: 1,
            max_in_flight: None,
            replicas: ReplicasSection::default(),
            pins: PinsSection::default(),
            annotate: false,
            tune: false,
        }
    }
}

/// `[pipeline.replicas]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicasSection {
    /// Preprocessing replicas (default 1).
    pub pre: usize,
    /// Inference replicas (default 1).
    pub infer: usize,
    /// Postprocessing replicas (default 1).
    pub post: usize,
}

impl Default for ReplicasSection {
    fn default() -> Self {
        ReplicasSection { pre: 1, infer: 1, post: 1 }
    }
}

/// `[pipeline.pins]`: core lists (default: empty, not pinned).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PinsSection {
    /// The capture (source) thread.
    pub capture: Vec<usize>,
    /// Preprocessing.
    pub pre: Vec<usize>,
    /// Inference.
    pub infer: Vec<usize>,
    /// Postprocessing.
    pub post: Vec<usize>,
}

/// `[serve]`: the MJPEG view with live statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSection {
    /// Serve the view (default false).
    pub enabled: bool,
    /// Where to listen (default `127.0.0.1:8080`; port 0 picks a free one).
    pub addr: String,
    /// Allow a non-loopback address (default false: binding one is refused).
    pub allow_remote: bool,
    /// JPEG quality 1–100 (default 80).
    pub quality: u8,
}

impl Default for ServeSection {
    fn default() -> Self {
        ServeSection {
            enabled: false,
            addr: framepipe_video::mjpeg::DEFAULT_ADDR.into(),
            allow_remote: false,
            quality: 80,
        }
    }
}

/// `[run]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// Stop after this many seconds (default: when the source ends or on SIGINT/SIGTERM).
    pub duration_s: Option<f64>,
    /// How long shutdown waits for frames in flight to drain, in ms (default 5000), before
    /// cancelling the stages, and as long again before giving up on them.
    pub close_timeout_ms: u64,
    /// Length of a latency window in the report, in seconds (default 10).
    pub window_s: f64,
    /// Keep every processed frame's latency in the report's `series` (default false).
    pub series: bool,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection { duration_s: None, close_timeout_ms: 5_000, window_s: 10.0, series: false }
    }
}

fn bad(name: &str, reason: impl Into<String>) -> AppError {
    AppError::Config { name: name.into(), reason: reason.into() }
}

/// What a [`NodeConfig`] resolves to: typed, checked, with paths resolved.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The source (stream 0).
    pub spec: SourceSpec,
    /// More sources, streams 1, 2, … in order.
    pub extra: Vec<SourceSpec>,
    /// Pace a file at its frame rate.
    pub realtime: bool,
    /// Frame limit.
    pub max_frames: Option<u64>,
    /// Time limits for network streams.
    pub open: OpenOptions,
    /// Longest read before the source counts as stalled.
    pub stall_timeout: Duration,
    /// Reconnection policy (attempts 0: none).
    pub reconnect: Reconnect,
    /// The model file.
    pub model_path: PathBuf,
    /// How to load it.
    pub model: ModelOptions,
    /// How to run the pipeline (its `pace` and `annotate` are set by the node).
    pub pipeline: PipelineOptions,
    /// The view, if enabled.
    pub serve: Option<MjpegOptions>,
    /// Run length.
    pub duration: Option<Duration>,
    /// Shutdown grace.
    pub close_timeout: Duration,
    /// Latency window.
    pub window: Duration,
    /// Keep the per-frame series.
    pub series: bool,
    /// Tune the pipeline at start (`pipeline.tune`).
    pub tune: bool,
}

/// Reconnection policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// Attempts in a row (0: never reconnect).
    pub attempts: u32,
    /// First wait.
    pub backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
}

impl Reconnect {
    /// Never reconnect.
    pub const NEVER: Reconnect = Reconnect { attempts: 0, backoff: Duration::ZERO, max_backoff: Duration::ZERO };

    /// The wait before attempt `n` (1-based): `backoff × 2^(n-1)`, at most `max_backoff`.
    pub fn wait(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(self.max_backoff.max(self.backoff))
    }
}

impl Resolved {
    /// Every source, by stream id: `spec` (stream 0), then `extra`.
    pub fn sources(&self) -> impl Iterator<Item = &SourceSpec> {
        std::iter::once(&self.spec).chain(&self.extra)
    }
}

impl NodeConfig {
    /// Parses a config from TOML text. Relative paths stay relative to the current directory.
    pub fn from_toml_str(text: &str) -> Result<Self, AppError> {
        toml::from_str(text).map_err(|e| bad("config", toml_error(&e)))
    }

    /// Reads a config file; relative paths in it become relative to its directory.
    pub fn from_file(path: &Path) -> Result<Self, AppError> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(&path.display().to_string(), e.to_string()))?;
        let mut cfg: NodeConfig =
            toml::from_str(&text).map_err(|e| bad(&path.display().to_string(), toml_error(&e)))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        cfg.rebase(base);
        Ok(cfg)
    }

    /// Makes relative paths (a file source, the model, the labels) relative to `base`.
    pub fn rebase(&mut self, base: &Path) {
        let fix = |p: &Path| if p.is_relative() { base.join(p) } else { p.to_path_buf() };
        for uri in std::iter::once(&mut self.source.uri).chain(self.source.extra.iter_mut()) {
            if let Ok(SourceSpec::File(p)) = uri.parse::<SourceSpec>() {
                *uri = fix(&p).display().to_string();
            }
        }
        self.model.path = self.model.path.as_deref().map(fix);
        self.model.labels = self.model.labels.as_deref().map(fix);
    }

    /// Checks every field and resolves it into typed options. Errors name the field.
    pub fn resolve(&self) -> Result<Resolved, AppError> {
        let s = &self.source;
        let spec: SourceSpec =
            s.uri.parse().map_err(|e: framepipe_video::VideoError| bad("source.uri", e.to_string()))?;
        let extra = s
            .extra
            .iter()
            .enumerate()
            .map(|(i, u)| {
                u.parse().map_err(|e: framepipe_video::VideoError| bad(&format!("source.extra[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<SourceSpec>, AppError>>()?;
        let positive = |name: &str, ms: u64| {
            if ms == 0 {
                Err(bad(name, "must be at least 1 ms"))
            } else {
                Ok(Duration::from_millis(ms))
            }
        };
        let open = OpenOptions {
            open_timeout: Some(positive("source.open_timeout_ms", s.open_timeout_ms)?),
            read_timeout: Some(positive("source.read_timeout_ms", s.read_timeout_ms)?),
            decoder: s
                .decoder
                .parse()
                .map_err(|_| bad("source.decoder", format!("`{}` is not auto, native or opencv", s.decoder)))?,
        };
        let stall_timeout = positive("source.stall_timeout_ms", s.stall_timeout_ms)?;
        if s.max_frames == Some(0) {
            return Err(bad("source.max_frames", "must be at least 1 (omit it for no limit)"));
        }
        let r = &s.reconnect;
        let reconnect = Reconnect {
            attempts: r.attempts,
            backoff: positive("source.reconnect.backoff_ms", r.backoff_ms)?,
            max_backoff: positive("source.reconnect.max_backoff_ms", r.max_backoff_ms)?,
        };
        // With several sources, reconnection applies to the live ones.
        if reconnect.attempts > 0 && !std::iter::once(&spec).chain(&extra).any(|s| s.is_live()) {
            return Err(bad(
                "source.reconnect.attempts",
                "only a live source (camera, stream, pipeline) can be reconnected",
            ));
        }

        let m = &self.model;
        let engine = match m.engine.trim() {
            "auto" => EngineChoice::Auto,
            "ort" | "onnxruntime" => EngineChoice::Ort,
            "tract" => EngineChoice::Tract,
            "tract-cuda" => EngineChoice::TractCuda,
            other => return Err(bad("model.engine", format!("`{other}`: expected auto, ort, tract or tract-cuda"))),
        };
        if m.threads == 0 {
            return Err(bad("model.threads", "must be at least 1"));
        }
        for (name, v) in [("model.conf", m.conf), ("model.iou", m.iou)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(name, format!("{v} is not in 0..=1")));
            }
        }
        let model_path = match &m.path {
            Some(p) => p.clone(),
            None => crate::assets::person_detector()?,
        };
        let mut model =
            ModelOptions { engine, conf: m.conf, iou: m.iou, labels: m.labels.clone(), ..Default::default() };
        model.engine_options.intra_threads = m.threads;
        model.engine_options.cuda_graph = m.cuda_graph;

        let p = &self.pipeline;
        let admission: Admission = p
            .admission
            .parse()
            .map_err(|e: framepipe::ParseAdmissionError| bad("pipeline.admission", e.to_string()))?;
        let deadline = match p.deadline_ms {
            None => None,
            Some(0) => return Err(bad("pipeline.deadline_ms", "must be at least 1 (omit it for no deadline)")),
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        if p.queue == 0 {
            return Err(bad("pipeline.queue", "a queue holds at least 1 frame"));
        }
        if p.max_in_flight == Some(0) {
            return Err(bad("pipeline.max_in_flight", "must be at least 1"));
        }
        for (name, n) in [("pre", p.replicas.pre), ("infer", p.replicas.infer), ("post", p.replicas.post)] {
            if n == 0 {
                return Err(bad(&format!("pipeline.replicas.{name}"), "every stage needs at least 1 replica"));
            }
        }
        let pipeline = PipelineOptions {
            replicas: Replicas { pre: p.replicas.pre, infer: p.replicas.infer, post: p.replicas.post },
            pins: Pins {
                decode: p.pins.capture.clone(),
                pre: p.pins.pre.clone(),
                infer: p.pins.infer.clone(),
                post: p.pins.post.clone(),
            },
            queue: p.queue,
            max_in_flight: match (p.max_in_flight, admission) {
                (Some(n), _) => Some(n),
                (None, Admission::Block) => None,
                (None, _) => Some(p.replicas.infer),
            },
            admission,
            deadline,
            annotate: (p.annotate || self.serve.enabled).then_some(None),
            ..Default::default()
        };
        let cores = framepipe::available_cores();
        for (name, list) in
            [("capture", &p.pins.capture), ("pre", &p.pins.pre), ("infer", &p.pins.infer), ("post", &p.pins.post)]
        {
            if let Some(c) = list.iter().find(|c| !cores.contains(c)) {
                return Err(bad(
                    &format!("pipeline.pins.{name}"),
                    format!("core {c} does not exist or is not available (available: {cores:?})"),
                ));
            }
        }

        let v = &self.serve;
        let serve = if v.enabled {
            let addr = framepipe_video::mjpeg::parse_addr(&v.addr).map_err(|e| bad("serve.addr", e))?;
            if !addr.ip().is_loopback() && !v.allow_remote {
                return Err(bad(
                    "serve.addr",
                    format!("{addr} is not a loopback address; set serve.allow_remote = true (--allow-remote) to show the camera to the network"),
                ));
            }
            if !(1..=100).contains(&v.quality) {
                return Err(bad("serve.quality", format!("{} is not in 1..=100", v.quality)));
            }
            Some(MjpegOptions { addr, allow_remote: v.allow_remote, quality: v.quality, ..Default::default() })
        } else {
            None
        };

        let run = &self.run;
        let duration = match run.duration_s {
            None => None,
            Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d)),
            Some(d) => return Err(bad("run.duration_s", format!("{d} is not a positive number of seconds"))),
        };
        if !(run.window_s.is_finite() && run.window_s > 0.0) {
            return Err(bad("run.window_s", format!("{} is not a positive number of seconds", run.window_s)));
        }
        Ok(Resolved {
            spec,
            extra,
            realtime: s.realtime,
            max_frames: s.max_frames,
            open,
            stall_timeout,
            reconnect,
            model_path,
            model,
            pipeline,
            serve,
            duration,
            close_timeout: positive("run.close_timeout_ms", run.close_timeout_ms)?,
            window: Duration::from_secs_f64(run.window_s),
            series: run.series,
            tune: p.tune,
        })
    }

    /// The config as TOML (every field, defaults included).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config always serializes")
    }
}

/// toml's message with the offending line shown (it names the field), on as few lines as it takes.
fn toml_error(e: &toml::de::Error) -> String {
    e.to_string().trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_is_all_defaults() {
        let cfg = NodeConfig::from_toml_str("").unwrap();
        assert_eq!(cfg, NodeConfig::default());
        assert_eq!(cfg.pipeline.admission, "keep-latest");
        assert_eq!(cfg.source.uri, "/dev/video0");
        // And the defaults survive a round trip through TOML.
        assert_eq!(NodeConfig::from_toml_str(&cfg.to_toml()).unwrap(), cfg);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let r = Reconnect { attempts: 5, backoff: Duration::from_millis(500), max_backoff: Duration::from_secs(3) };
        let waits: Vec<u64> = (1..=5).map(|n| r.wait(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 3000, 3000]);
    }
}
