//! Auto-tuning: measure each stage's service time, then choose replicas, pins, threads per
//! inference session and queue capacities for the cores (and GPU) given.
//!
//! The choice is `framepipe_tune::plan` (re-exported here as [`plan`]), a pure function of the
//! measured service times, the cores and the engine's device; its model is documented in that
//! crate. This module measures: [`calibrate_frames`] and [`calibrate_video`] run a few frames
//! through the serial path, and [`Tuned`] carries a plan with its measurements: it prints the plan
//! and why, writes it as a node config file, and becomes the bench JSON's `tuned` object.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use framepipe::pool::Pool;
use framepipe::{Admission, Stage};
use framepipe_infer::EngineKind;
use framepipe_video::{SourceSpec, VideoSource};
use framepipe_vision::{Frame, PixelFormat};
use serde::Serialize;
use serde_json::Value;

use crate::config::NodeConfig;
use crate::stages::{InferStage, PipelineOptions, PostStage, PreStage, StagePools};
use crate::{AppError, DetectModel, ModelOptions};

/// Frames a calibration runs through the serial path (per thread count), by default.
pub const CALIBRATION_FRAMES: usize = 6;

pub use framepipe_tune::{
    plan, Device, InferTime, Plan, ServiceTimes, TuneError, TuneInput, DEFAULT_GPU_HOST_SHARE, DEFAULT_GPU_PARALLELISM,
    DEFAULT_LATENCY_SLACK,
};

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The device an engine runs on.
pub fn device_of(kind: EngineKind) -> Device {
    match kind {
        EngineKind::TractCuda => Device::Gpu,
        EngineKind::Ort | EngineKind::Tract => Device::Cpu,
    }
}

/// Applying a [`Plan`] to what runs it.
pub trait ApplyPlan {
    /// Applies the plan to pipeline options (replicas, pins, queue, max_in_flight). Under
    /// `keep-latest` and `drop-oldest`, `max_in_flight` stays the inference replicas (a frame
    /// leaves the camera only when a replica can start on it).
    fn apply(&self, opts: &mut PipelineOptions);
    /// Applies the plan to a node config (`[model] threads`, `[pipeline]` replicas, pins, queue,
    /// max_in_flight); `tune` is cleared: the file holds the result.
    fn apply_to_config(&self, cfg: &mut NodeConfig);
}

impl ApplyPlan for Plan {
    fn apply(&self, opts: &mut PipelineOptions) {
        opts.replicas = self.replicas;
        opts.pins = self.pins.clone();
        opts.queue = self.queue;
        opts.max_in_flight = Some(match opts.admission {
            Admission::Block => self.max_in_flight,
            _ => self.replicas.infer,
        });
    }

    fn apply_to_config(&self, cfg: &mut NodeConfig) {
        cfg.model.threads = self.threads;
        let p = &mut cfg.pipeline;
        p.replicas.pre = self.replicas.pre;
        p.replicas.infer = self.replicas.infer;
        p.replicas.post = self.replicas.post;
        p.pins.capture = self.pins.decode.clone();
        p.pins.pre = self.pins.pre.clone();
        p.pins.infer = self.pins.infer.clone();
        p.pins.post = self.pins.post.clone();
        p.queue = self.queue;
        p.max_in_flight = Some(if p.admission.trim() == "block" { self.max_in_flight } else { self.replicas.infer });
        p.tune = false;
    }
}

/// A plan with what it was made from: printed, written as a config, reported as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Tuned {
    /// The plan.
    pub plan: Plan,
    /// The measured service times.
    pub service: ServiceTimes,
    /// Where inference runs.
    pub device: Device,
    /// The engine.
    pub engine: String,
    /// The cores planned for.
    pub cores: Vec<usize>,
    /// Seconds the calibration took (model loads included).
    pub calibration_s: f64,
    /// Where the plan was written, if it was.
    pub config: Option<PathBuf>,
}

impl Tuned {
    /// The plan and why, for the terminal.
    pub fn render(&self) -> String {
        let p = &self.plan;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "tuned plan: replicas pre={} infer={} post={}, {} thread{} per session, queue {}, max_in_flight {}, pins {}",
            p.replicas.pre,
            p.replicas.infer,
            p.replicas.post,
            p.threads,
            plural(p.threads),
            p.queue,
            p.max_in_flight,
            p.pins
        );
        for r in &p.reasons {
            let _ = writeln!(s, "  why: {r}");
        }
        let _ = writeln!(s, "  calibration took {:.1} s ({})", self.calibration_s, self.engine);
        if let Some(path) = &self.config {
            let _ = writeln!(s, "  written to {}", path.display());
        }
        s
    }

    /// The bench JSON's `tuned` object (schema in `docs/formats.md`).
    pub fn to_json(&self) -> Value {
        let p = &self.plan;
        let infer: serde_json::Map<String, Value> =
            self.service.infer_us.iter().map(|t| (t.threads.to_string(), Value::from(t.us))).collect();
        serde_json::json!({
            "plan": {
                "replicas": p.replicas,
                "threads": p.threads,
                "pins": { "decode": p.pins.decode, "pre": p.pins.pre, "infer": p.pins.infer, "post": p.pins.post },
                "queue": p.queue,
                "max_in_flight": p.max_in_flight,
            },
            "service_us": {
                "decode": self.service.decode_us,
                "pre": self.service.pre_us,
                "infer": infer,
                "post": self.service.post_us,
            },
            "calibration_frames": self.service.frames,
            "calibration_s": self.calibration_s,
            "device": self.device,
            "engine": self.engine,
            "cores": self.cores,
            "predicted_fps": p.predicted_fps,
            "predicted_latency_us": p.predicted_latency_us,
            "serial_fps": p.serial_fps,
            "serial_latency_us": p.serial_latency_us,
            "bound": p.bound,
            "bottleneck": p.bottleneck,
            "busy_threads": p.busy_threads,
            "reasons": p.reasons,
            "config": self.config.as_ref().map(|c| c.display().to_string()),
        })
    }

    /// Adds the `tuned` object to the `pipelined` object of a bench JSON (`BenchResult::to_json`).
    pub fn attach(&self, bench_json: &mut Value) {
        if let Some(obj) = bench_json.get_mut("pipelined").and_then(Value::as_object_mut) {
            obj.insert("tuned".into(), self.to_json());
        }
    }

    /// The plan as a node config file: `base` with the plan applied, headed by the reasons as
    /// comments. Paths in `base` should be absolute (the file may be read from anywhere).
    pub fn config_text(&self, base: &NodeConfig) -> String {
        let mut cfg = base.clone();
        self.plan.apply_to_config(&mut cfg);
        let mut s =
            String::from("# Written by `framepipe bench --tune`: the tuned plan, as a perception-node config.\n");
        s.push_str("# Load it with `framepipe camera --config FILE` or `framepipe bench --config FILE`.\n");
        for r in &self.plan.reasons {
            let _ = writeln!(s, "# {r}");
        }
        s.push('\n');
        s.push_str(&cfg.to_toml());
        s
    }

    /// Writes [`config_text`](Tuned::config_text) to `path` and remembers where.
    pub fn write_config(&mut self, path: &Path, base: &NodeConfig) -> Result<(), AppError> {
        let text = self.config_text(base);
        std::fs::write(path, text).map_err(|e| AppError::Output { path: path.to_path_buf(), reason: e.to_string() })?;
        self.config = Some(path.to_path_buf());
        Ok(())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `frames` through pre, infer and post of `model` on this thread (after one warm-up run of
/// the engine) and returns the median service times (pre, infer, post), µs.
pub fn measure_stages(model: &Arc<DetectModel>, frames: &[Frame]) -> Result<(f64, f64, f64), AppError> {
    let first = frames.first().ok_or_else(|| TuneError::NoFrames("the calibration".into()))?;
    let pools = StagePools::new(model, 4);
    let mut pre = PreStage::new(model, &pools)?;
    let mut infer = InferStage::new(model, &pools)?;
    infer.warm_up()?;
    let mut post = PostStage::new(model, &pools)?;
    let proto = first.clone();
    let frame_pool = Pool::new(2, 0, move || proto.clone());
    let (mut tp, mut ti, mut tq) = (Vec::new(), Vec::new(), Vec::new());
    for f in frames {
        let mut pooled = frame_pool.take();
        pooled.clone_from(f);
        let t0 = Instant::now();
        let p = pre.process(pooled)?;
        let t1 = Instant::now();
        let i = infer.process(p)?;
        let t2 = Instant::now();
        let d = post.process(i)?;
        let t3 = Instant::now();
        drop(d);
        tp.push((t1 - t0).as_secs_f64() * 1e6);
        ti.push((t2 - t1).as_secs_f64() * 1e6);
        tq.push((t3 - t2).as_secs_f64() * 1e6);
    }
    Ok((median(tp), median(ti), median(tq)))
}

/// The thread counts per session worth measuring on `cores` cores for an engine on `device`: 1, 2
/// and 4 that fit (the GPU: only `current`).
pub fn thread_candidates(cores: usize, device: Device, current: usize) -> Vec<usize> {
    if device == Device::Gpu {
        return vec![current];
    }
    let mut v: Vec<usize> = [1, 2, 4].into_iter().filter(|&t| t <= cores.max(1)).collect();
    if current <= cores && !v.contains(&current) {
        v.push(current);
    }
    v.sort_unstable();
    v
}

/// A calibration: the service times, and the model loaded at each thread count measured (so that
/// the plan's can be used without loading it again).
pub struct Calibration {
    /// The service times.
    pub service: ServiceTimes,
    /// The model at each thread count measured.
    pub models: Vec<(usize, Arc<DetectModel>)>,
    /// Seconds it took.
    pub seconds: f64,
}

impl std::fmt::Debug for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibration").field("service", &self.service).field("seconds", &self.seconds).finish()
    }
}

impl Calibration {
    /// The model loaded with `threads` threads per session, if it was measured.
    pub fn model(&self, threads: usize) -> Option<Arc<DetectModel>> {
        self.models.iter().find(|(t, _)| *t == threads).map(|(_, m)| m.clone())
    }
}

/// Measures `frames` (decoded already; `decode_us` is the source's median read time, 0 if not
/// measured) through the serial path of `model` (loaded from `path` with `opts`) at each thread
/// count in `threads`, loading the model again for the counts it was not loaded with.
pub fn calibrate_frames(
    model: Arc<DetectModel>,
    path: &Path,
    opts: &ModelOptions,
    frames: &[Frame],
    decode_us: f64,
    threads: &[usize],
) -> Result<Calibration, AppError> {
    let start = Instant::now();
    if frames.is_empty() {
        return Err(TuneError::NoFrames("the calibration".into()).into());
    }
    let loaded = opts.engine_options.intra_threads;
    let mut models = vec![(loaded, model)];
    let mut infer_us = Vec::new();
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    let mut counts = threads.to_vec();
    if counts.is_empty() {
        counts.push(loaded);
    }
    for &t in &counts {
        let m = match models.iter().find(|(n, _)| *n == t) {
            Some((_, m)) => m.clone(),
            None => {
                let mut o = opts.clone();
                o.engine_options.intra_threads = t;
                let m = DetectModel::load(path, &o)?;
                models.push((t, m.clone()));
                m
            }
        };
        let (p, i, q) = measure_stages(&m, frames)?;
        pre.push(p);
        post.push(q);
        infer_us.push(InferTime { threads: t, us: i });
    }
    Ok(Calibration {
        service: ServiceTimes { decode_us, pre_us: median(pre), infer_us, post_us: median(post), frames: frames.len() },
        models,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Reads up to `n` frames of `video` (timing each read) and calibrates on them; see
/// [`calibrate_frames`].
pub fn calibrate_video(
    model: Arc<DetectModel>,
    path: &Path,
    opts: &ModelOptions,
    video: &Path,
    n: usize,
    threads: &[usize],
) -> Result<Calibration, AppError> {
    let start = Instant::now();
    let mut src = VideoSource::open(&SourceSpec::File(video.to_path_buf()), n.max(1) + 2)?;
    let mut frames = Vec::new();
    let mut reads = Vec::new();
    while frames.len() < n.max(1) {
        let t0 = Instant::now();
        match src.read_frame() {
            None => break,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(f)) => {
                reads.push(t0.elapsed().as_secs_f64() * 1e6);
                frames.push(f.detach());
            }
        }
    }
    if frames.is_empty() {
        return Err(TuneError::NoFrames(video.display().to_string()).into());
    }
    // The first read opens the decoder: leave it out when there are others.
    if reads.len() > 1 {
        reads.remove(0);
    }
    let mut cal = calibrate_frames(model, path, opts, &frames, median(reads), threads)?;
    cal.seconds = start.elapsed().as_secs_f64();
    Ok(cal)
}

/// Mid-grey frames of `width`×`height` (BGR), for calibrating before a live source delivers.
pub fn blank_frames(width: usize, height: usize, n: usize) -> Result<Vec<Frame>, AppError> {
    let mut f = Frame::new(width.max(16), height.max(16), PixelFormat::Bgr8)?;
    f.data_mut().fill(114);
    Ok(vec![f; n.max(1)])
}

/// Calibrates, plans and returns the plan with its measurements and the model to run it with:
/// the whole of `tune = true` for a caller that has frames.
pub fn tune_on_frames(
    model: Arc<DetectModel>,
    path: &Path,
    opts: &ModelOptions,
    frames: &[Frame],
    decode_us: f64,
) -> Result<(Tuned, Arc<DetectModel>), AppError> {
    let cores = framepipe::available_cores();
    let device = device_of(model.selection().kind);
    let threads = thread_candidates(cores.len(), device, opts.engine_options.intra_threads);
    let cal = calibrate_frames(model, path, opts, frames, decode_us, &threads)?;
    finish(cal, cores, device)
}

/// Plans from a calibration: the [`Tuned`] result and the model loaded at the plan's threads.
pub fn finish(cal: Calibration, cores: Vec<usize>, device: Device) -> Result<(Tuned, Arc<DetectModel>), AppError> {
    let plan = plan(&TuneInput::new(cal.service.clone(), cores.clone(), device))?;
    let model = cal
        .model(plan.threads)
        .or_else(|| cal.models.first().map(|(_, m)| m.clone()))
        .ok_or_else(|| AppError::Config { name: "tune".into(), reason: "the calibration loaded no model".into() })?;
    let engine = model.selection().kind.to_string();
    Ok((Tuned { plan, service: cal.service, device, engine, cores, calibration_s: cal.seconds, config: None }, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_writes_a_config_that_loads_back() {
        // decode 1 ms, pre 2 ms, infer 20 ms at 1 thread, post 1 ms, on 2 cores.
        let service = ServiceTimes {
            decode_us: 1e3,
            pre_us: 2e3,
            infer_us: vec![InferTime { threads: 1, us: 20e3 }],
            post_us: 1e3,
            frames: 6,
        };
        let p = plan(&TuneInput::new(service.clone(), vec![0, 1], Device::Cpu)).unwrap();
        let tuned = Tuned {
            plan: p,
            service,
            device: Device::Cpu,
            engine: "ort".into(),
            cores: vec![0, 1],
            calibration_s: 1.0,
            config: None,
        };
        let mut base = NodeConfig::default();
        base.pipeline.admission = "block".into();
        base.pipeline.tune = true;
        let text = tuned.config_text(&base);
        assert!(text.starts_with("# Written by `framepipe bench --tune`"));
        let back = NodeConfig::from_toml_str(&text).unwrap();
        assert_eq!(back.pipeline.replicas.infer, 1);
        assert_eq!(back.pipeline.pins.infer, vec![1]);
        assert_eq!(back.pipeline.max_in_flight, Some(3));
        assert!(!back.pipeline.tune);
        let j = tuned.to_json();
        assert_eq!(j["plan"]["replicas"]["infer"], 1);
        assert_eq!(j["service_us"]["infer"]["1"], 20000.0);
    }
}
