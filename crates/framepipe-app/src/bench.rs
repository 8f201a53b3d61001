//! The video benchmark: the same stages and engine run three ways on the same frames.
//!
//! * `serial`: decode, pre, infer and post one after another on one thread (the baseline);
//! * `pipelined`: the framepipe runtime (decode on the source thread, one thread per stage replica,
//!   frames released just in time, results in order);
//! * `pool`: N independent workers doing pre, infer and post for whole frames, fed by a decode
//!   thread, with sessions sharing the weights (the TensorRT-YOLO / FastDeploy multi-thread pattern);
//!   results come out in whatever order they finish, which is measured, not fixed;
//! * `per-model` (with several models): one thread per model, fed every frame, joined by sequence
//!   number (the seed's design).
//!
//! With several videos (one stream each) or several models (one branch each, joined into one
//! result per frame), [`run_models`] runs the modes on every stream and model; each mode's report
//! lists per-stream counters (`streams`) and per-model latencies (`branches`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framepipe::pool::Pooled;
use framepipe::{Admission, BranchReport, Pace, Percentiles, Report, Stage, StageReport, StreamStats};
use framepipe_video::{DecoderChoice, OpenOptions, SourceSpec, VideoInfo, VideoSource};
use framepipe_vision::Frame;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::stages::{build_pipeline, Detected, InferStage, PipelineOptions, PostStage, PreStage, StagePools};
use crate::trace::Span;
use crate::{AppError, DetectModel};

mod multi;

/// A way to run the stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One thread, one frame at a time.
    Serial,
    /// The framepipe runtime.
    Pipelined,
    /// Independent workers, unordered.
    Pool,
    /// One thread per model, joined by sequence number (the seed's design).
    #[serde(rename = "per-model")]
    PerModel,
}

impl Mode {
    /// The mode's name, as in the JSON keys.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Serial => "serial",
            Mode::Pipelined => "pipelined",
            Mode::Pool => "pool",
            Mode::PerModel => "per-model",
        }
    }
}

/// What to benchmark.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The video (stream 0).
    pub video: PathBuf,
    /// Further videos, one stream each (streams 1, 2, …), read alongside `video`.
    pub extra_videos: Vec<PathBuf>,
    /// The modes to run, in order.
    pub modes: Vec<Mode>,
    /// Replicas, pins and queues of the pipelined mode (the pool mode uses `replicas.infer` workers).
    pub pipeline: PipelineOptions,
    /// Stop after this many frames (of each video).
    pub frames: Option<u64>,
    /// Pace the source at the video's frame rate, like a camera.
    pub realtime: bool,
    /// Record one span per frame per stage (for `--trace` and `--plot`).
    pub spans: bool,
    /// Write the pipelined run's annotated frames to this video.
    pub out: Option<PathBuf>,
    /// Which media backend decodes the videos (default: native first, then OpenCV where built in).
    pub decoder: DecoderChoice,
}

impl BenchOptions {
    /// How to open the videos.
    pub(crate) fn open_options(&self) -> OpenOptions {
        OpenOptions { decoder: self.decoder, ..OpenOptions::default() }
    }
}

/// Receives progress while a mode runs (the CLI draws a progress bar).
pub trait Progress: Sync {
    /// A mode starts; `total` frames are expected, if known.
    fn start(&self, mode: Mode, total: Option<u64>);
    /// One frame came out.
    fn frame(&self);
    /// The mode ended.
    fn finish(&self, mode: Mode);
}

/// No progress reporting.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: Mode, _: Option<u64>) {}
    fn frame(&self) {}
    fn finish(&self, _: Mode) {}
}

/// How far results moved from capture order.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct OutOfOrder {
    /// Results delivered after a later frame's result.
    pub count: u64,
    /// The largest distance, in frames, between a late result and the latest frame delivered before it.
    pub max_displacement: u64,
    /// The mean of that distance over the late results.
    pub mean_displacement: f64,
}

#[derive(Default)]
struct OrderTracker {
    max_seen: Option<u64>,
    stats: OutOfOrder,
    sum: u64,
}

impl OrderTracker {
    fn see(&mut self, seq: u64) {
        match self.max_seen {
            Some(m) if seq < m => {
                let d = m - seq;
                self.stats.count += 1;
                self.sum += d;
                self.stats.max_displacement = self.stats.max_displacement.max(d);
                self.stats.mean_displacement = self.sum as f64 / self.stats.count as f64;
            }
            _ => self.max_seen = Some(seq),
        }
    }
}

/// One mode's result.
#[derive(Debug)]
pub struct ModeRun {
    /// The mode.
    pub mode: Mode,
    /// Counters, throughput, latency and per-stage times, in the runtime's report format.
    pub report: Report,
    /// How far results moved from capture order.
    pub out_of_order: OutOfOrder,
    /// Workers (pool) or inference replicas (pipelined); 1 for serial.
    pub parallelism: usize,
    /// Decode errors (a truncated or undecodable video).
    pub decode_errors: Vec<String>,
    /// One span per frame per stage, if asked for.
    pub spans: Vec<Span>,
    /// End-to-end latency of each processed frame, in µs, in delivery order (for plots).
    pub latencies_us: Vec<f64>,
    /// Per frame, what the result's delivery adds after its slowest branch (model) is done: the
    /// join and the hop to the caller (`None` where not measured).
    pub join_overhead_us: Option<Percentiles>,
}

/// The video as the benchmark saw it.
#[derive(Clone, Debug, Serialize)]
pub struct VideoMeta {
    /// The file.
    pub path: String,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Frame rate.
    pub fps: f64,
    /// Frames in the file (as the container says).
    pub frames: Option<u64>,
}

impl BenchOptions {
    /// Every video, stream by stream.
    pub fn videos(&self) -> Vec<PathBuf> {
        std::iter::once(self.video.clone()).chain(self.extra_videos.iter().cloned()).collect()
    }
}

/// The whole benchmark.
#[derive(Debug)]
pub struct BenchResult {
    /// The video (stream 0).
    pub video: VideoMeta,
    /// Every video, stream by stream.
    pub videos: Vec<VideoMeta>,
    /// The model file (the first branch's).
    pub model: String,
    /// Every model file, branch by branch.
    pub models: Vec<String>,
    /// The branches' names (the model files' stems, made unique).
    pub branch_names: Vec<String>,
    /// The engine used.
    pub engine: String,
    /// Why that engine.
    pub engine_reason: String,
    /// One run per mode, in order.
    pub runs: Vec<ModeRun>,
}

fn hist() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    h.auto(false);
    h
}

/// The branches' names: the model files' stems, with `-2`, `-3`, … added to repeats.
pub fn branch_names(models: &[Arc<DetectModel>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for m in models {
        let stem = m.path().file_stem().map_or("model".to_string(), |s| s.to_string_lossy().into_owned());
        let mut name = stem.clone();
        let mut k = 2;
        while names.contains(&name) {
            name = format!("{stem}-{k}");
            k += 1;
        }
        names.push(name);
    }
    names
}

fn video_meta(path: &std::path::Path, info: &VideoInfo) -> VideoMeta {
    VideoMeta {
        path: path.display().to_string(),
        width: info.width,
        height: info.height,
        fps: info.fps.unwrap_or(30.0),
        frames: info.frames,
    }
}

/// Runs the benchmark of one model.
pub fn run(model: Arc<DetectModel>, opts: &BenchOptions, progress: &dyn Progress) -> Result<BenchResult, AppError> {
    run_models(&[model], opts, progress)
}

/// Runs the benchmark of several models (one branch each) on several videos (one stream each).
pub fn run_models(
    models: &[Arc<DetectModel>],
    opts: &BenchOptions,
    progress: &dyn Progress,
) -> Result<BenchResult, AppError> {
    match models {
        [model] if opts.extra_videos.is_empty() && !opts.modes.contains(&Mode::PerModel) => {
            run_single(model.clone(), opts, progress)
        }
        _ => multi::run(models, opts, progress),
    }
}

/// One video, one model: the stages in a line.
fn run_single(model: Arc<DetectModel>, opts: &BenchOptions, progress: &dyn Progress) -> Result<BenchResult, AppError> {
    let spec = SourceSpec::File(opts.video.clone());
    // Open once up front: a bad video fails here, before any mode starts.
    let probe = VideoSource::open_with(&spec, 1, &opts.open_options())?;
    let info = probe.info().clone();
    drop(probe);
    let mut runs = Vec::new();
    for &mode in &opts.modes {
        let total = match (opts.frames, info.frames) {
            (Some(n), Some(f)) => Some(n.min(f)),
            (n, f) => n.or(f),
        };
        progress.start(mode, total);
        let run = match mode {
            Mode::Serial => run_serial(&model, &spec, &info, opts, progress)?,
            Mode::Pipelined => run_pipelined(&model, &spec, &info, opts, progress)?,
            Mode::Pool => run_pool(&model, &spec, &info, opts, progress)?,
            Mode::PerModel => unreachable!("per-model runs through the multi-model bench"),
        };
        progress.finish(mode);
        runs.push(run);
    }
    let names = branch_names(std::slice::from_ref(&model));
    for run in &mut runs {
        one_stream_one_branch(run, &names[0]);
    }
    let meta = video_meta(&opts.video, &info);
    Ok(BenchResult {
        video: meta.clone(),
        videos: vec![meta],
        model: model.path().display().to_string(),
        models: vec![model.path().display().to_string()],
        branch_names: names,
        engine: model.selection().kind.to_string(),
        engine_reason: model.selection().reason.clone(),
        runs,
    })
}

fn open(spec: &SourceSpec, opts: &BenchOptions, pool: usize) -> Result<VideoSource, AppError> {
    Ok(VideoSource::open_with(spec, pool, &opts.open_options())?.with_limit(opts.frames))
}

fn period(info: &VideoInfo, opts: &BenchOptions) -> Option<Duration> {
    opts.realtime.then(|| Duration::from_secs_f64(1.0 / info.fps.unwrap_or(30.0)))
}

/// Per-stage histograms for the modes that run outside the runtime.
struct Timer {
    names: [&'static str; 4],
    service: [Histogram<u64>; 4],
    wait: [Histogram<u64>; 4],
    e2e: Histogram<u64>,
    processed: u64,
    errored: u64,
    frames_in: u64,
    first_capture: Option<Instant>,
    last_out: Option<Instant>,
}

impl Timer {
    fn new() -> Self {
        Timer {
            names: ["decode", "pre", "infer", "post"],
            service: [hist(), hist(), hist(), hist()],
            wait: [hist(), hist(), hist(), hist()],
            e2e: hist(),
            processed: 0,
            errored: 0,
            frames_in: 0,
            first_capture: None,
            last_out: None,
        }
    }

    fn record(&mut self, stage: usize, d: Duration) {
        self.service[stage].saturating_record((d.as_nanos() as u64).max(1));
    }

    fn record_wait(&mut self, stage: usize, d: Duration) {
        self.wait[stage].saturating_record((d.as_nanos() as u64).max(1));
    }

    fn captured(&mut self, t: Instant) {
        self.frames_in += 1;
        self.first_capture.get_or_insert(t);
    }

    fn delivered(&mut self, captured: Instant, ok: bool) -> f64 {
        let now = Instant::now();
        self.last_out = Some(now);
        if ok {
            self.processed += 1;
            let ns = now.saturating_duration_since(captured).as_nanos() as u64;
            self.e2e.saturating_record(ns.max(1));
            ns as f64 / 1e3
        } else {
            self.errored += 1;
            f64::NAN
        }
    }

    /// A report in the runtime's format; `bound` is the mode's own bound in frames/s.
    fn report(&self, replicas: [usize; 4], max_in_flight: usize, bound: f64, reordered: u64) -> Report {
        let stages: Vec<StageReport> = (0..4)
            .map(|k| StageReport {
                name: self.names[k].to_string(),
                source: k == 0,
                replicas: replicas[k],
                pins: vec![],
                service_us: Percentiles::of(&self.service[k]),
                wait_us: Percentiles::of(&self.wait[k]),
                mean_service_us: if self.service[k].is_empty() { 0.0 } else { self.service[k].mean() / 1e3 },
                processed: self.service[k].len(),
                errored: 0,
                skipped: 0,
                panicked: 0,
                aborted: 0,
                busy_s: self.service[k].mean() * self.service[k].len() as f64 / 1e9,
                branch: None,
            })
            .collect();
        let wall = match (self.first_capture, self.last_out) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let throughput = if wall > 0.0 { self.processed as f64 / wall } else { 0.0 };
        let latency = Percentiles::of(&self.e2e);
        let sum: f64 = stages.iter().filter(|s| !s.source).map(|s| s.service_us.p50).sum();
        let out = self.processed + self.errored;
        Report {
            admission: Admission::Block,
            release: "free".into(),
            max_in_flight,
            frames_in: self.frames_in,
            admitted: self.frames_in,
            dropped: 0,
            frames_out: out,
            processed: self.processed,
            skipped: 0,
            errored: self.errored,
            source_errors: 0,
            lost: self.frames_in.saturating_sub(out),
            reordered,
            wall_s: wall,
            throughput_fps: throughput,
            bound_fps: bound,
            efficiency: if bound > 0.0 { throughput / bound } else { 0.0 },
            latency_us: latency,
            stage_sum_p50_us: sum,
            overhead_p50_us: latency.p50 - sum,
            hops: 0,
            hop_baseline_us: None,
            stages,
            links: vec![],
            streams: vec![],
            branches: vec![],
            notices: vec![],
            uptime_s: wall,
        }
    }

    fn mean_s(&self, k: usize) -> f64 {
        if self.service[k].is_empty() {
            0.0
        } else {
            self.service[k].mean() / 1e9
        }
    }
}

fn span(lane: &str, stage: &'static str, seq: u64, epoch: Instant, start: Instant, end: Instant) -> Span {
    Span {
        lane: lane.to_string(),
        stage,
        seq,
        start_us: start.saturating_duration_since(epoch).as_secs_f64() * 1e6,
        dur_us: end.saturating_duration_since(start).as_secs_f64() * 1e6,
    }
}

fn pace(start: Instant, n: u64, period: Option<Duration>) {
    if let Some(p) = period {
        let due = start + p.mul_f64(n as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

fn run_serial(
    model: &Arc<DetectModel>,
    spec: &SourceSpec,
    info: &VideoInfo,
    opts: &BenchOptions,
    progress: &dyn Progress,
) -> Result<ModeRun, AppError> {
    let pools = StagePools::new(model, 4);
    let mut pre = PreStage::new(model, &pools)?;
    let mut infer = InferStage::new(model, &pools)?;
    infer.warm_up()?;
    let mut post = PostStage::new(model, &pools)?;
    let mut src = open(spec, opts, 2)?;
    let mut t = Timer::new();
    let mut spans = Vec::new();
    let mut latencies = Vec::new();
    let mut decode_errors = Vec::new();
    let epoch = Instant::now();
    let per = period(info, opts);
    let mut seq = 0u64;
    loop {
        pace(epoch, seq, per);
        let t0 = Instant::now();
        let frame = match src.read_frame() {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                decode_errors.push(e.to_string());
                continue;
            }
        };
        let t1 = Instant::now();
        t.captured(t1);
        t.record(0, t1 - t0);
        let result = (|| -> Result<Detected, AppError> {
            let p = pre.process(frame)?;
            let t2 = Instant::now();
            t.record(1, t2 - t1);
            let i = infer.process(p)?;
            let t3 = Instant::now();
            t.record(2, t3 - t2);
            let d = post.process(i)?;
            let t4 = Instant::now();
            t.record(3, t4 - t3);
            if opts.spans {
                spans.push(span("decode", "decode", seq, epoch, t0, t1));
                spans.push(span("serial", "pre", seq, epoch, t1, t2));
                spans.push(span("serial", "infer", seq, epoch, t2, t3));
                spans.push(span("serial", "post", seq, epoch, t3, t4));
            }
            Ok(d)
        })();
        let lat = t.delivered(t1, result.is_ok());
        if result.is_ok() {
            latencies.push(lat);
        }
        progress.frame();
        seq += 1;
    }
    let sum = (0..4).map(|k| t.mean_s(k)).sum::<f64>();
    let report = t.report([1, 1, 1, 1], 1, if sum > 0.0 { 1.0 / sum } else { 0.0 }, 0);
    Ok(ModeRun {
        mode: Mode::Serial,
        report,
        out_of_order: OutOfOrder::default(),
        parallelism: 1,
        decode_errors,
        spans,
        latencies_us: latencies,
        join_overhead_us: None,
    })
}

/// Wraps the video source to time each decode for the trace.
struct TimedSource {
    inner: VideoSource,
    spans: Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>,
    record: bool,
}

impl framepipe::Source for TimedSource {
    type Item = Pooled<Frame>;
    type Error = framepipe_video::VideoError;
    fn next(&mut self) -> Option<Result<Pooled<Frame>, Self::Error>> {
        let t0 = Instant::now();
        let r = self.inner.read_frame();
        if self.record && r.is_some() {
            self.spans.lock().unwrap_or_else(|e| e.into_inner()).push((t0, Instant::now()));
        }
        r
    }
}

fn run_pipelined(
    model: &Arc<DetectModel>,
    spec: &SourceSpec,
    info: &VideoInfo,
    opts: &BenchOptions,
    progress: &dyn Progress,
) -> Result<ModeRun, AppError> {
    let mut popts = opts.pipeline.clone();
    if let Some(p) = period(info, opts) {
        popts.pace = Pace::Period(p);
    }
    if let Some(out) = &opts.out {
        popts.annotate = Some(Some(out.clone()));
    }
    let src = open(spec, opts, popts.live_frames())?;
    let decode_spans = Arc::new(std::sync::Mutex::new(Vec::new()));
    let timed = TimedSource { inner: src, spans: decode_spans.clone(), record: opts.spans };
    let video = Some((info.fps.unwrap_or(30.0), info.width, info.height));
    let mut pipeline = build_pipeline(model.clone(), timed, &popts, video)?;
    let names: Vec<String> = pipeline.stage_names().to_vec();
    let post = names.iter().position(|n| n == "post");
    let mut branch = hist();
    let mut join = hist();
    let mut branch_errored = 0;
    let replicas = [popts.replicas.pre, popts.replicas.infer, popts.replicas.post, 1];
    let epoch = Instant::now();
    let mut order = OrderTracker::default();
    let mut spans = Vec::new();
    let mut latencies = Vec::new();
    let mut decode_errors = Vec::new();
    while let Some(out) = pipeline.recv() {
        let now = Instant::now();
        order.see(out.seq());
        if opts.spans {
            for (k, st) in out.stamps().iter().enumerate() {
                let stage: &'static str = match names[k].as_str() {
                    "pre" => "pre",
                    "infer" => "infer",
                    "post" => "post",
                    _ => "annotate",
                };
                let lane = if replicas.get(k).copied().unwrap_or(1) > 1 {
                    format!("{}#{}", names[k], st.replica)
                } else {
                    names[k].clone()
                };
                let start = out.captured_at() + Duration::from_nanos(st.enter_ns);
                let end = out.captured_at() + Duration::from_nanos(st.exit_ns);
                spans.push(span(&lane, stage, out.seq(), epoch, start, end));
            }
        }
        match out.result() {
            Ok(_) => {
                latencies.push(now.saturating_duration_since(out.captured_at()).as_secs_f64() * 1e6);
                // The model's branch ends when its postprocess does.
                if let Some(st) = post.and_then(|k| out.stamps().get(k)) {
                    branch.saturating_record(st.exit_ns.max(1));
                    let total = now.saturating_duration_since(out.captured_at()).as_nanos() as u64;
                    join.saturating_record(total.saturating_sub(st.exit_ns).max(1));
                }
            }
            Err(framepipe::Tombstone::Source { error }) => decode_errors.push(error.to_string()),
            Err(_) => branch_errored += 1,
        }
        progress.frame();
    }
    let mut report = pipeline.close()?;
    report.branches.push(BranchReport {
        name: String::new(),
        stages: vec!["pre".into(), "infer".into(), "post".into()],
        latency_us: Percentiles::of(&branch),
        errored: branch_errored,
    });
    if opts.spans {
        let decoded = decode_spans.lock().unwrap_or_else(|e| e.into_inner());
        for (seq, (a, b)) in decoded.iter().enumerate() {
            spans.push(span("decode", "decode", seq as u64, epoch, *a, *b));
        }
    }
    Ok(ModeRun {
        mode: Mode::Pipelined,
        report,
        out_of_order: order.stats,
        parallelism: popts.replicas.infer,
        decode_errors,
        spans,
        latencies_us: latencies,
        join_overhead_us: Some(Percentiles::of(&join)),
    })
}

struct PoolJob {
    seq: u64,
    captured: Instant,
    frame: Pooled<Frame>,
}

struct PoolDone {
    seq: u64,
    captured: Instant,
    worker: usize,
    ok: bool,
    times: [Instant; 4],
}

fn run_pool(
    model: &Arc<DetectModel>,
    spec: &SourceSpec,
    info: &VideoInfo,
    opts: &BenchOptions,
    progress: &dyn Progress,
) -> Result<ModeRun, AppError> {
    let workers = opts.pipeline.replicas.infer.max(1);
    let pools = StagePools::new(model, 2 * workers + 2);
    let mut src = open(spec, opts, 2 * workers + 4)?;
    let (job_tx, job_rx) = crossbeam_channel::bounded::<PoolJob>(workers);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<PoolDone>(workers);
    // Build every worker's stages first (each with its own session) and warm them up.
    let mut stages = Vec::new();
    for _ in 0..workers {
        let mut infer = InferStage::new(model, &pools)?;
        infer.warm_up()?;
        stages.push((PreStage::new(model, &pools)?, infer, PostStage::new(model, &pools)?));
    }
    let epoch = Instant::now();
    let per = period(info, opts);
    let record = opts.spans;
    std::thread::scope(|scope| -> Result<ModeRun, AppError> {
        for (w, (mut pre, mut infer, mut post)) in stages.into_iter().enumerate() {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            std::thread::Builder::new()
                .name(format!("worker#{w}"))
                .spawn_scoped(scope, move || {
                    while let Ok(job) = job_rx.recv() {
                        let t1 = Instant::now();
                        let r = pre.process(job.frame).and_then(|p| {
                            let t2 = Instant::now();
                            infer.process(p).map(|i| (t2, i))
                        });
                        let (ok, t2, t3) = match r {
                            Ok((t2, i)) => {
                                let t3 = Instant::now();
                                (post.process(i).is_ok(), t2, t3)
                            }
                            Err(_) => (false, t1, t1),
                        };
                        let t4 = Instant::now();
                        let done =
                            PoolDone { seq: job.seq, captured: job.captured, worker: w, ok, times: [t1, t2, t3, t4] };
                        if done_tx.send(done).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| AppError::config("pool", format!("cannot start a worker thread: {e}")))?;
        }
        drop(job_rx);
        drop(done_tx);
        let (span_tx, span_rx) = crossbeam_channel::unbounded::<(u64, Instant, Instant)>();
        let decoder = std::thread::Builder::new()
            .name("decode".into())
            .spawn_scoped(scope, move || {
                let mut errors = Vec::new();
                let mut seq = 0u64;
                loop {
                    pace(epoch, seq, per);
                    let t0 = Instant::now();
                    match src.read_frame() {
                        None => break,
                        Some(Err(e)) => errors.push(e.to_string()),
                        Some(Ok(frame)) => {
                            let t1 = Instant::now();
                            if record {
                                let _ = span_tx.send((seq, t0, t1));
                            }
                            let _ = span_tx.send((u64::MAX, t0, t1));
                            if job_tx.send(PoolJob { seq, captured: t1, frame }).is_err() {
                                break;
                            }
                            seq += 1;
                        }
                    }
                }
                errors
            })
            .map_err(|e| AppError::config("pool", format!("cannot start the decode thread: {e}")))?;
        let mut t = Timer::new();
        let mut branch = hist();
        let mut order = OrderTracker::default();
        let mut spans = Vec::new();
        let mut latencies = Vec::new();
        for done in done_rx.iter() {
            for (seq, a, b) in span_rx.try_iter() {
                if seq == u64::MAX {
                    t.captured(b);
                    t.record(0, b - a);
                } else {
                    spans.push(span("decode", "decode", seq, epoch, a, b));
                }
            }
            order.see(done.seq);
            let [t1, t2, t3, t4] = done.times;
            t.record_wait(1, t1.saturating_duration_since(done.captured));
            if done.ok {
                t.record(1, t2 - t1);
                t.record(2, t3 - t2);
                t.record(3, t4 - t3);
                branch.saturating_record((t4.saturating_duration_since(done.captured).as_nanos() as u64).max(1));
            }
            let lat = t.delivered(done.captured, done.ok);
            if done.ok {
                latencies.push(lat);
            }
            if record {
                let lane = format!("worker#{}", done.worker);
                spans.push(span(&lane, "pre", done.seq, epoch, t1, t2));
                spans.push(span(&lane, "infer", done.seq, epoch, t2, t3));
                spans.push(span(&lane, "post", done.seq, epoch, t3, t4));
            }
            progress.frame();
        }
        let decode_errors = decoder.join().unwrap_or_default();
        for (seq, a, b) in span_rx.try_iter() {
            if seq == u64::MAX {
                t.captured(b);
                t.record(0, b - a);
            } else {
                spans.push(span("decode", "decode", seq, epoch, a, b));
            }
        }
        let work = t.mean_s(1) + t.mean_s(2) + t.mean_s(3);
        let bound = match (t.mean_s(0), work) {
            (d, w) if d > 0.0 && w > 0.0 => (1.0 / d).min(workers as f64 / w),
            _ => 0.0,
        };
        let mut report = t.report([1, workers, workers, workers], 2 * workers + 1, bound, order.stats.count);
        report.branches.push(BranchReport {
            name: String::new(),
            stages: vec!["pre".into(), "infer".into(), "post".into()],
            latency_us: Percentiles::of(&branch),
            errored: report.errored,
        });
        Ok(ModeRun {
            mode: Mode::Pool,
            report,
            out_of_order: order.stats,
            parallelism: workers,
            decode_errors,
            spans,
            latencies_us: latencies,
            join_overhead_us: None,
        })
    })
}

/// One video, one model: the report lists one stream and one branch, like a multi-model run's.
fn one_stream_one_branch(run: &mut ModeRun, name: &str) {
    let r = &mut run.report;
    if r.streams.is_empty() {
        let mut s = StreamStats::default();
        s.frames_in = r.frames_in;
        s.admitted = r.admitted;
        s.dropped = r.dropped;
        s.frames_out = r.frames_out;
        s.reordered = r.reordered;
        r.streams.push(s);
    }
    if r.branches.is_empty() {
        // Serial: a frame's result is out as soon as its postprocess is done.
        r.branches.push(BranchReport {
            name: String::new(),
            stages: vec!["pre".into(), "infer".into(), "post".into()],
            latency_us: r.latency_us,
            errored: r.errored.saturating_sub(r.source_errors),
        });
    }
    for b in &mut r.branches {
        b.name = name.to_string();
    }
}

impl BenchResult {
    /// The run of `mode`, if it ran.
    pub fn get(&self, mode: Mode) -> Option<&ModeRun> {
        self.runs.iter().find(|r| r.mode == mode)
    }

    /// One JSON object with a key per mode (the schema is in `docs/formats.md`).
    pub fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        for run in &self.runs {
            let mut v = serde_json::to_value(&run.report).expect("a report serializes");
            let m = v.as_object_mut().expect("a report is an object");
            m.insert("mode".into(), Value::from(run.mode.name()));
            m.insert("engine".into(), Value::from(self.engine.clone()));
            m.insert("engine_reason".into(), Value::from(self.engine_reason.clone()));
            m.insert("model".into(), Value::from(self.model.clone()));
            m.insert("video".into(), serde_json::to_value(&self.video).expect("serializes"));
            m.insert("parallelism".into(), Value::from(run.parallelism));
            m.insert("out_of_order".into(), serde_json::to_value(run.out_of_order).expect("serializes"));
            m.insert("decode_errors".into(), Value::from(run.decode_errors.clone()));
            m.insert("join_overhead_us".into(), serde_json::to_value(run.join_overhead_us).expect("serializes"));
            m.insert("models".into(), Value::from(self.models.clone()));
            m.insert("videos".into(), serde_json::to_value(&self.videos).expect("serializes"));
            // Each stream names its video, each branch its model.
            if let Some(Value::Array(streams)) = m.get_mut("streams") {
                for s in streams.iter_mut().filter_map(Value::as_object_mut) {
                    let id = s.get("id").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let source = self.videos.get(id).map(|v| v.path.clone());
                    s.insert("source".into(), Value::from(source));
                }
            }
            if let Some(Value::Array(branches)) = m.get_mut("branches") {
                for (i, b) in branches.iter_mut().filter_map(Value::as_object_mut).enumerate() {
                    b.insert("model".into(), Value::from(self.models.get(i).cloned()));
                }
            }
            obj.insert(run.mode.name().into(), v);
        }
        Value::Object(obj)
    }

    /// The per-mode tables, the side-by-side comparison and the verdict, for the terminal.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "video {} ({}x{} @ {:.1} fps), model {}, engine {}",
            self.video.path, self.video.width, self.video.height, self.video.fps, self.model, self.engine
        );
        for run in &self.runs {
            let r = &run.report;
            let _ = writeln!(s, "\n== {} ({}) ==", run.mode.name(), describe(run));
            let _ = writeln!(
                s,
                "throughput {:.2} fps   bound {:.2} fps   efficiency {:.3}",
                r.throughput_fps, r.bound_fps, r.efficiency
            );
            let l = &r.latency_us;
            let _ = writeln!(
                s,
                "latency ms (capture -> result): p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                l.p50 / 1e3,
                l.p90 / 1e3,
                l.p99 / 1e3,
                l.p999 / 1e3,
                l.max / 1e3
            );
            // Summed over the models when there are several (`pre:<model>`, …).
            let p50 = |name: &str| -> f64 {
                r.stages
                    .iter()
                    .filter(|x| x.name == name || x.name.split_once(':').is_some_and(|(s, _)| s == name))
                    .map(|x| x.service_us.p50 / 1e3)
                    .sum()
            };
            let _ = writeln!(
                s,
                "Speed: {:.1}ms decode, {:.1}ms preprocess, {:.1}ms inference, {:.1}ms postprocess per image (p50)",
                p50("decode"),
                p50("pre"),
                p50("infer"),
                p50("post")
            );
            let w = r.stages.iter().map(|x| x.name.len()).max().unwrap_or(0).max(10);
            let _ = writeln!(
                s,
                "{:<w$} {:>3}  {:>11} {:>11}  {:>12} {:>12}",
                "stage", "x", "service p50", "service p99", "queue p50", "queue p99"
            );
            for st in &r.stages {
                let _ = writeln!(
                    s,
                    "{:<w$} {:>3}  {:>9.2}ms {:>9.2}ms  {:>10.2}ms {:>10.2}ms",
                    st.name,
                    st.replicas,
                    st.service_us.p50 / 1e3,
                    st.service_us.p99 / 1e3,
                    st.wait_us.p50 / 1e3,
                    st.wait_us.p99 / 1e3
                );
            }
            let _ = writeln!(
                s,
                "frames in {}  out {}  dropped {}  skipped {}  errored {}  lost {}  out-of-order {} (max {} frames)",
                r.frames_in,
                r.frames_out,
                r.dropped,
                r.skipped,
                r.errored,
                r.lost,
                run.out_of_order.count,
                run.out_of_order.max_displacement
            );
            if self.videos.len() > 1 || self.models.len() > 1 {
                let _ = writeln!(s, "{}", streams_line(r, &self.videos));
                for b in &r.branches {
                    let _ = writeln!(
                        s,
                        "branch {:<16} latency ms (capture -> its postprocess): p50 {:.1}  p99 {:.1}   errored {}",
                        b.name,
                        b.latency_us.p50 / 1e3,
                        b.latency_us.p99 / 1e3,
                        b.errored
                    );
                }
                if let Some(j) = join_line(run) {
                    let _ = writeln!(s, "{j}");
                }
            }
            for e in &run.decode_errors {
                let _ = writeln!(s, "decode error: {e}");
            }
            for n in &r.notices {
                let _ = writeln!(s, "note: {n}");
            }
        }
        if self.runs.len() > 1 {
            let base = self.get(Mode::Serial).map(|r| r.report.throughput_fps);
            let _ = writeln!(
                s,
                "\n{:<10} {:>8} {:>10} {:>9} {:>9} {:>13} {:>5}",
                "mode", "fps", "vs serial", "p50 ms", "p99 ms", "out-of-order", "lost"
            );
            for run in &self.runs {
                let r = &run.report;
                let ratio =
                    base.filter(|b| *b > 0.0).map_or("-".to_string(), |b| format!("{:.2}x", r.throughput_fps / b));
                let _ = writeln!(
                    s,
                    "{:<10} {:>8.2} {:>10} {:>9.1} {:>9.1} {:>13} {:>5}",
                    run.mode.name(),
                    r.throughput_fps,
                    ratio,
                    r.latency_us.p50 / 1e3,
                    r.latency_us.p99 / 1e3,
                    run.out_of_order.count,
                    r.lost
                );
            }
        }
        if let Some(v) = self.verdict() {
            let _ = writeln!(s, "\n{v}");
        }
        s
    }

    /// The verdict line: speed-up over serial, distance to the bound, latency against serial.
    pub fn verdict(&self) -> Option<String> {
        let p = self.get(Mode::Pipelined)?;
        let r = &p.report;
        let slowest = r.slowest_stage().map(|s| s.name.clone()).unwrap_or_default();
        let mut v = format!(
            "verdict: pipelined reached {:.1}% of its bound ({:.2} fps = replicas / service time of `{}`), in order ({} out of order, {} lost)",
            100.0 * r.efficiency,
            r.bound_fps,
            slowest,
            p.out_of_order.count,
            r.lost
        );
        if let Some(s) = self.get(Mode::Serial) {
            let sr = &s.report;
            if sr.throughput_fps > 0.0 && sr.latency_us.p50 > 0.0 {
                v.push_str(&format!(
                    "; {:.2}x serial throughput at {:+.1}% p50 latency",
                    r.throughput_fps / sr.throughput_fps,
                    100.0 * (r.latency_us.p50 / sr.latency_us.p50 - 1.0)
                ));
            }
        }
        if let Some(pool) = self.get(Mode::Pool) {
            let pr = &pool.report;
            if pr.throughput_fps > 0.0 {
                v.push_str(&format!(
                    "; {:.2}x the unordered pool ({} results out of order there)",
                    r.throughput_fps / pr.throughput_fps,
                    pool.out_of_order.count
                ));
            }
        }
        if let Some(pm) = self.get(Mode::PerModel) {
            let pr = &pm.report;
            if pr.throughput_fps > 0.0 && pr.latency_us.p50 > 0.0 {
                v.push_str(&format!(
                    "; {:.2}x one thread per model at {:+.1}% p50 latency",
                    r.throughput_fps / pr.throughput_fps,
                    100.0 * (r.latency_us.p50 / pr.latency_us.p50 - 1.0)
                ));
            }
        }
        Some(v)
    }
}

fn describe(run: &ModeRun) -> String {
    match run.mode {
        Mode::Serial => "one thread".into(),
        Mode::Pipelined => {
            format!("framepipe runtime, release {}, {} infer replica(s)", run.report.release, run.parallelism)
        }
        Mode::Pool => format!("{} unordered workers", run.parallelism),
        Mode::PerModel => format!("one thread per model ({}), joined in order", run.report.branches.len()),
    }
}

/// Per-stream counters on one line.
fn streams_line(r: &Report, videos: &[VideoMeta]) -> String {
    let parts: Vec<String> = r
        .streams
        .iter()
        .map(|st| {
            let name = videos.get(st.id as usize).map_or(String::new(), |v| {
                std::path::Path::new(&v.path).file_name().map_or(v.path.clone(), |f| f.to_string_lossy().into_owned())
            });
            format!("{} {}: out {} dropped {} reordered {}", st.id, name, st.frames_out, st.dropped, st.reordered)
        })
        .collect();
    format!("streams: {}", parts.join("; "))
}

/// The joined result's latency against the slowest branch's, and what the join adds per frame.
pub fn join_line(run: &ModeRun) -> Option<String> {
    let r = &run.report;
    let slowest = r.branches.iter().max_by(|a, b| a.latency_us.p50.total_cmp(&b.latency_us.p50))?;
    let mut line = format!(
        "join: result p50 {:.2} ms, slowest branch `{}` p50 {:.2} ms (p99 {:.2} vs {:.2} ms)",
        r.latency_us.p50 / 1e3,
        slowest.name,
        slowest.latency_us.p50 / 1e3,
        r.latency_us.p99 / 1e3,
        slowest.latency_us.p99 / 1e3
    );
    if let Some(j) = run.join_overhead_us {
        line.push_str(&format!(
            "; per frame, the result is out {:.1} us (p50), {:.1} us (p99) after its slowest branch",
            j.p50, j.p99
        ));
    }
    Some(line)
}
