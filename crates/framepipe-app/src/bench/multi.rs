//! The bench on several videos (one stream each) and several models (one branch each).
//!
//! * `serial`: one thread reads the videos round-robin and runs the models one after another on
//!   each frame (the baseline);
//! * `pipelined`: the framepipe runtime: one source per video, a fan-out to one branch per model
//!   (`pre` → `infer` × N → `post`), joined by sequence number;
//! * `pool`: N unordered workers, each running every model on a whole frame;
//! * `per-model`: one thread per model (the seed's design), fed every frame by a decode thread,
//!   their results joined by sequence number on the caller's thread.
//!
//! Every mode hands each model the same decoded frame through a [`SharedFrame`] (no copy, no
//! allocation per frame).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use framepipe::pool::Pooled;
use framepipe::{Admission, BranchReport, Pace, Percentiles, Report, Stage, StageReport, StreamStats, MAX_BRANCHES};
use framepipe_video::{SourceSpec, VideoError, VideoInfo, VideoSource};
use framepipe_vision::Frame;
use hdrhistogram::Histogram;

use super::{hist, pace, span, BenchOptions, BenchResult, Mode, ModeRun, OrderTracker, Progress, VideoMeta};
use crate::stages::{
    branch_stage_name, build_multi_pipeline, source_name, InferStage, PostStage, PreStage, SharedFrame, SharedFrames,
    StagePools,
};
use crate::trace::Span;
use crate::{AppError, DetectModel};

/// One model's pre, infer and post, run one after another on one thread.
struct ModelStages {
    pre: PreStage,
    infer: InferStage,
    post: PostStage,
}

/// When one model handled one frame: start, pre done, infer done, post done.
#[derive(Clone, Copy, Debug)]
struct BranchTimes {
    ok: bool,
    t: [Instant; 4],
}

impl ModelStages {
    fn new(model: &DetectModel, frames: usize) -> Result<Self, AppError> {
        let pools = StagePools::new(model, frames);
        let mut infer = InferStage::new(model, &pools)?;
        infer.warm_up()?;
        Ok(ModelStages { pre: PreStage::new(model, &pools)?, infer, post: PostStage::new(model, &pools)? })
    }

    /// Runs the model on `frame`; a failure in one stage is this model's error for this frame.
    fn run(&mut self, frame: SharedFrame) -> BranchTimes {
        let t0 = Instant::now();
        let Ok(p) = self.pre.process(frame) else { return BranchTimes { ok: false, t: [t0; 4] } };
        let t1 = Instant::now();
        let Ok(i) = self.infer.process(p) else { return BranchTimes { ok: false, t: [t0, t1, t1, t1] } };
        let t2 = Instant::now();
        let ok = self.post.process(i).is_ok();
        BranchTimes { ok, t: [t0, t1, t2, Instant::now()] }
    }
}

/// One frame's way through a mode outside the runtime.
struct Outcome {
    seq: u64,
    stream: u32,
    /// The frame's index in its stream.
    index: u64,
    /// When the read started and returned (the capture).
    decode: (Instant, Instant),
    worker: usize,
    branches: [Option<BranchTimes>; MAX_BRANCHES],
}

impl Outcome {
    fn captured(&self) -> Instant {
        self.decode.1
    }
}

/// Reads several videos round-robin, one frame from each in turn, until all have ended.
struct Reader {
    sources: Vec<VideoSource>,
    live: Vec<bool>,
    next: usize,
}

impl Reader {
    fn open(videos: &[PathBuf], opts: &BenchOptions, pool: usize) -> Result<Self, AppError> {
        let sources = videos
            .iter()
            .map(|v| {
                Ok(VideoSource::open_with(&SourceSpec::File(v.clone()), pool, &opts.open_options())?
                    .with_limit(opts.frames))
            })
            .collect::<Result<Vec<_>, AppError>>()?;
        Ok(Reader { live: vec![true; sources.len()], sources, next: 0 })
    }

    fn read(&mut self) -> Option<(u32, Result<Pooled<Frame>, VideoError>)> {
        let n = self.sources.len();
        for k in 0..n {
            let s = (self.next + k) % n;
            if !self.live[s] {
                continue;
            }
            match self.sources[s].read_frame() {
                None => self.live[s] = false,
                Some(r) => {
                    self.next = s + 1;
                    return Some((s as u32, r));
                }
            }
        }
        None
    }
}

/// The decode loop every mode shares: reads the videos round-robin, paced at the videos' rate with
/// `--realtime`, times each read, numbers the frames (sequence, and index within their stream) and
/// keeps the decode errors, which take no sequence number.
struct Reads {
    reader: Reader,
    frames: SharedFrames,
    epoch: Instant,
    period: Option<Duration>,
    reads: u64,
    seq: u64,
    indices: Vec<u64>,
    errors: Vec<String>,
}

impl Reads {
    /// Opens the videos with room for `live` frames alive at once; the clock starts now.
    fn open(setup: &Setup, live: usize) -> Result<Self, AppError> {
        let reader = Reader::open(&setup.videos, setup.opts, live)?;
        Ok(Reads {
            indices: vec![0; reader.sources.len()],
            reader,
            frames: SharedFrames::new(live),
            epoch: Instant::now(),
            period: setup.period(),
            reads: 0,
            seq: 0,
            errors: Vec::new(),
        })
    }

    /// The next decoded frame with its outcome record, or `None` when every video has ended.
    fn next(&mut self) -> Option<(Outcome, SharedFrame)> {
        loop {
            pace(self.epoch, self.reads, self.period);
            self.reads += 1;
            let t0 = Instant::now();
            let (stream, r) = self.reader.read()?;
            let t1 = Instant::now();
            match r {
                Err(e) => self.errors.push(e.to_string()),
                Ok(f) => {
                    let index = next_index(&mut self.indices, stream);
                    let o = Outcome {
                        seq: self.seq,
                        stream,
                        index,
                        decode: (t0, t1),
                        worker: 0,
                        branches: empty_branches(),
                    };
                    self.seq += 1;
                    return Some((o, self.frames.share(f)));
                }
            }
        }
    }
}

/// The setting shared by every mode.
pub(super) struct Setup<'a> {
    pub(super) models: &'a [Arc<DetectModel>],
    pub(super) names: Vec<String>,
    pub(super) videos: Vec<PathBuf>,
    pub(super) infos: Vec<VideoInfo>,
    pub(super) opts: &'a BenchOptions,
}

impl Setup<'_> {
    fn stage_names(&self) -> Vec<String> {
        let n = self.names.len();
        let mut v = vec!["decode".to_string()];
        for b in &self.names {
            for s in ["pre", "infer", "post"] {
                v.push(branch_stage_name(s, b, n));
            }
        }
        v
    }

    /// The period between reads when paced like cameras: every video at its own rate, read in turn.
    fn period(&self) -> Option<Duration> {
        self.opts.realtime.then(|| {
            let fps: f64 = self.infos.iter().map(|i| i.fps.unwrap_or(30.0)).sum();
            Duration::from_secs_f64(1.0 / fps)
        })
    }
}

/// Per-stage, per-branch and per-stream figures for the modes that run outside the runtime.
struct Recorder {
    names: Vec<String>,
    service: Vec<Histogram<u64>>,
    wait: Vec<Histogram<u64>>,
    e2e: Histogram<u64>,
    join: Histogram<u64>,
    branch_latency: Vec<Histogram<u64>>,
    branch_errored: Vec<u64>,
    processed: u64,
    first_capture: Option<Instant>,
    last_out: Option<Instant>,
    streams: Vec<StreamStats>,
    last_index: Vec<Option<u64>>,
    order: OrderTracker,
    spans: Option<Vec<Span>>,
    latencies: Vec<f64>,
    epoch: Instant,
}

fn ns(d: Duration) -> u64 {
    (d.as_nanos() as u64).max(1)
}

impl Recorder {
    fn new(setup: &Setup, epoch: Instant) -> Self {
        let names = setup.stage_names();
        let streams = (0..setup.videos.len())
            .map(|i| {
                let mut s = StreamStats::default();
                s.id = i as u32;
                s
            })
            .collect();
        Recorder {
            service: names.iter().map(|_| hist()).collect(),
            wait: names.iter().map(|_| hist()).collect(),
            names,
            e2e: hist(),
            join: hist(),
            branch_latency: setup.names.iter().map(|_| hist()).collect(),
            branch_errored: vec![0; setup.names.len()],
            processed: 0,
            first_capture: None,
            last_out: None,
            streams,
            last_index: vec![None; setup.videos.len()],
            order: OrderTracker::default(),
            spans: setup.opts.spans.then(Vec::new),
            latencies: Vec::new(),
            epoch,
        }
    }

    /// A frame's result is out; `lane` names the thread each branch ran on (for the trace).
    fn deliver(&mut self, o: &Outcome, lane: impl Fn(usize) -> String) {
        let now = Instant::now();
        let captured = o.captured();
        self.first_capture = Some(self.first_capture.map_or(captured, |f| f.min(captured)));
        self.last_out = Some(now);
        self.service[0].saturating_record(ns(o.decode.1 - o.decode.0));
        self.order.see(o.seq);
        let s = &mut self.streams[o.stream as usize];
        s.frames_in += 1;
        s.admitted += 1;
        s.frames_out += 1;
        let last = &mut self.last_index[o.stream as usize];
        match *last {
            Some(l) if o.index < l => s.reordered += 1,
            _ => *last = Some(o.index),
        }
        for (i, b) in o.branches.iter().enumerate() {
            let Some(b) = b else { continue };
            if !b.ok {
                self.branch_errored[i] += 1;
                continue;
            }
            let k = 1 + 3 * i;
            self.wait[k].saturating_record(ns(b.t[0].saturating_duration_since(captured)));
            for j in 0..3 {
                self.service[k + j].saturating_record(ns(b.t[j + 1] - b.t[j]));
            }
            self.branch_latency[i].saturating_record(ns(b.t[3].saturating_duration_since(captured)));
            if let Some(spans) = self.spans.as_mut() {
                let lane = lane(i);
                for (j, stage) in ["pre", "infer", "post"].into_iter().enumerate() {
                    spans.push(span(&lane, stage, o.seq, self.epoch, b.t[j], b.t[j + 1]));
                }
            }
        }
        if let Some(spans) = self.spans.as_mut() {
            spans.push(span("decode", "decode", o.seq, self.epoch, o.decode.0, o.decode.1));
        }
        if let Some(last) = o.branches.iter().flatten().map(|b| b.t[3]).max() {
            self.join.saturating_record(ns(now.saturating_duration_since(last)));
        }
        // A joined frame is processed; a model's error for it is counted in that branch.
        self.processed += 1;
        let d = ns(now.saturating_duration_since(captured));
        self.e2e.saturating_record(d);
        self.latencies.push(d as f64 / 1e3);
    }

    fn mean_s(&self, k: usize) -> f64 {
        if self.service[k].is_empty() {
            0.0
        } else {
            self.service[k].mean() / 1e9
        }
    }

    /// Mean time of model `i`'s three stages, in seconds.
    fn model_s(&self, i: usize) -> f64 {
        (1..=3).map(|j| self.mean_s(3 * i + j)).sum()
    }

    fn finish(
        self,
        mode: Mode,
        setup: &Setup,
        replicas: usize,
        max_in_flight: usize,
        bound: f64,
        errors: Vec<String>,
    ) -> ModeRun {
        let stages: Vec<StageReport> = (0..self.names.len())
            .map(|k| StageReport {
                name: self.names[k].clone(),
                branch: (k > 0).then(|| setup.names[(k - 1) / 3].clone()),
                source: k == 0,
                replicas: if k == 0 { 1 } else { replicas },
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
            })
            .collect();
        let branches = (0..setup.names.len())
            .map(|i| BranchReport {
                name: setup.names[i].clone(),
                stages: self.names[1 + 3 * i..4 + 3 * i].to_vec(),
                latency_us: Percentiles::of(&self.branch_latency[i]),
                errored: self.branch_errored[i],
            })
            .collect();
        let wall = match (self.first_capture, self.last_out) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let throughput = if wall > 0.0 { self.processed as f64 / wall } else { 0.0 };
        let latency = Percentiles::of(&self.e2e);
        let sum: f64 = stages.iter().filter(|s| !s.source).map(|s| s.service_us.p50).sum();
        let frames: u64 = self.streams.iter().map(|s| s.frames_out).sum();
        let report = Report {
            admission: Admission::Block,
            release: "free".into(),
            max_in_flight,
            frames_in: frames,
            admitted: frames,
            dropped: 0,
            frames_out: frames,
            processed: self.processed,
            skipped: 0,
            errored: 0,
            source_errors: 0,
            lost: 0,
            reordered: self.order.stats.count,
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
            streams: self.streams,
            branches,
            notices: vec![],
            uptime_s: wall,
        };
        ModeRun {
            mode,
            report,
            out_of_order: self.order.stats,
            parallelism: replicas,
            decode_errors: errors,
            spans: self.spans.unwrap_or_default(),
            latencies_us: self.latencies,
            join_overhead_us: Some(Percentiles::of(&self.join)),
        }
    }
}

/// The next index in `stream` (counting per stream).
fn next_index(indices: &mut [u64], stream: u32) -> u64 {
    let i = indices[stream as usize];
    indices[stream as usize] += 1;
    i
}

fn rate(s: f64) -> f64 {
    if s > 0.0 {
        1.0 / s
    } else {
        0.0
    }
}

fn empty_branches() -> [Option<BranchTimes>; MAX_BRANCHES] {
    [None; MAX_BRANCHES]
}

/// Runs every mode asked for.
pub(super) fn run(
    models: &[Arc<DetectModel>],
    opts: &BenchOptions,
    progress: &dyn Progress,
) -> Result<BenchResult, AppError> {
    if models.is_empty() || models.len() > MAX_BRANCHES {
        return Err(AppError::config("--model", format!("give 1 to {MAX_BRANCHES} models, not {}", models.len())));
    }
    if opts.out.is_some() {
        return Err(AppError::config("--out", "an annotated video is written for one video and one model only"));
    }
    let videos = opts.videos();
    // Open every video up front: a bad one fails here, named, before any mode starts.
    let mut infos = Vec::new();
    for v in &videos {
        infos.push(VideoSource::open_with(&SourceSpec::File(v.clone()), 1, &opts.open_options())?.info().clone());
    }
    let setup = Setup { models, names: super::branch_names(models), videos, infos, opts };
    let total: Option<u64> = setup
        .infos
        .iter()
        .map(|i| match (opts.frames, i.frames) {
            (Some(n), Some(f)) => Some(n.min(f)),
            (n, f) => n.or(f),
        })
        .sum();
    let mut runs = Vec::new();
    for &mode in &opts.modes {
        progress.start(mode, total);
        let run = match mode {
            Mode::Serial => run_serial(&setup, progress)?,
            Mode::Pipelined => run_pipelined(&setup, progress)?,
            Mode::Pool => run_pool(&setup, progress)?,
            Mode::PerModel => run_per_model(&setup, progress)?,
        };
        progress.finish(mode);
        runs.push(run);
    }
    let metas: Vec<VideoMeta> = setup.videos.iter().zip(&setup.infos).map(|(p, i)| super::video_meta(p, i)).collect();
    Ok(BenchResult {
        video: metas[0].clone(),
        videos: metas,
        model: models[0].path().display().to_string(),
        models: models.iter().map(|m| m.path().display().to_string()).collect(),
        branch_names: setup.names.clone(),
        engine: models[0].selection().kind.to_string(),
        engine_reason: models[0].selection().reason.clone(),
        runs,
    })
}

fn run_serial(setup: &Setup, progress: &dyn Progress) -> Result<ModeRun, AppError> {
    let n = setup.models.len();
    let mut stages = setup.models.iter().map(|m| ModelStages::new(m, 4)).collect::<Result<Vec<_>, _>>()?;
    let mut reads = Reads::open(setup, 4)?;
    let mut rec = Recorder::new(setup, reads.epoch);
    while let Some((mut o, frame)) = reads.next() {
        for (i, s) in stages.iter_mut().enumerate() {
            o.branches[i] = Some(s.run(frame.clone()));
        }
        drop(frame);
        rec.deliver(&o, |_| "serial".to_string());
        progress.frame();
    }
    let errors = reads.errors;
    let all: f64 = rec.mean_s(0) + (0..n).map(|i| rec.model_s(i)).sum::<f64>();
    Ok(rec.finish(Mode::Serial, setup, 1, 1, rate(all), errors))
}

fn run_pool(setup: &Setup, progress: &dyn Progress) -> Result<ModeRun, AppError> {
    let n = setup.models.len();
    let workers = setup.opts.pipeline.replicas.infer.max(1);
    let live = 3 * workers + 4;
    let mut all_stages = Vec::new();
    for _ in 0..workers {
        all_stages.push(setup.models.iter().map(|m| ModelStages::new(m, live)).collect::<Result<Vec<_>, _>>()?);
    }
    let mut reads = Reads::open(setup, live)?;
    let epoch = reads.epoch;
    let (job_tx, job_rx) = crossbeam_channel::bounded::<(Outcome, SharedFrame)>(workers);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Outcome>(workers);
    std::thread::scope(|scope| -> Result<ModeRun, AppError> {
        for (w, mut stages) in all_stages.into_iter().enumerate() {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            std::thread::Builder::new()
                .name(format!("worker#{w}"))
                .spawn_scoped(scope, move || {
                    while let Ok((mut o, frame)) = job_rx.recv() {
                        for (i, s) in stages.iter_mut().enumerate() {
                            o.branches[i] = Some(s.run(frame.clone()));
                        }
                        drop(frame);
                        o.worker = w;
                        if done_tx.send(o).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| AppError::config("pool", format!("cannot start a worker thread: {e}")))?;
        }
        drop((job_rx, done_tx));
        let decoder = std::thread::Builder::new()
            .name("decode".into())
            .spawn_scoped(scope, move || {
                while let Some(job) = reads.next() {
                    if job_tx.send(job).is_err() {
                        break;
                    }
                }
                reads.errors
            })
            .map_err(|e| AppError::config("pool", format!("cannot start the decode thread: {e}")))?;
        let mut rec = Recorder::new(setup, epoch);
        for o in done_rx.iter() {
            let w = o.worker;
            rec.deliver(&o, |_| format!("worker#{w}"));
            progress.frame();
        }
        let errors = decoder.join().unwrap_or_default();
        let work: f64 = (0..n).map(|i| rec.model_s(i)).sum();
        let bound = match (rec.mean_s(0), work) {
            (d, w) if d > 0.0 && w > 0.0 => (1.0 / d).min(workers as f64 / w),
            _ => 0.0,
        };
        Ok(rec.finish(Mode::Pool, setup, workers, 2 * workers + 1, bound, errors))
    })
}

fn run_per_model(setup: &Setup, progress: &dyn Progress) -> Result<ModeRun, AppError> {
    let n = setup.models.len();
    let q = setup.opts.pipeline.queue.max(1);
    // Frames read and not yet joined: at most the slowest model's queue, the frame it works on and
    // the one the decoder hands over, plus the results waiting for the collector (`n * (q + 2)`).
    // The ring of pending frames holds them all.
    let window = (n + 1) * (q + 2) + 2;
    let stages = setup.models.iter().map(|m| ModelStages::new(m, window + 2)).collect::<Result<Vec<_>, _>>()?;
    let mut reads = Reads::open(setup, window + 2)?;
    let epoch = reads.epoch;
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..n {
        let (tx, rx) = crossbeam_channel::bounded::<(u64, SharedFrame)>(q);
        txs.push(tx);
        rxs.push(rx);
    }
    let (res_tx, res_rx) = crossbeam_channel::bounded::<(u64, usize, BranchTimes)>(n * (q + 2));
    let (meta_tx, meta_rx) = crossbeam_channel::bounded::<Outcome>(window);
    std::thread::scope(|scope| -> Result<ModeRun, AppError> {
        for (i, (mut s, rx)) in stages.into_iter().zip(rxs).enumerate() {
            let res_tx = res_tx.clone();
            std::thread::Builder::new()
                .name(setup.names[i].clone())
                .spawn_scoped(scope, move || {
                    for (seq, frame) in rx.iter() {
                        if res_tx.send((seq, i, s.run(frame))).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| AppError::config("per-model", format!("cannot start a model thread: {e}")))?;
        }
        drop(res_tx);
        let decoder = std::thread::Builder::new()
            .name("decode".into())
            .spawn_scoped(scope, move || {
                'read: while let Some((o, frame)) = reads.next() {
                    let seq = o.seq;
                    // The collector learns of the frame before any model can finish it.
                    if meta_tx.send(o).is_err() {
                        break;
                    }
                    for tx in &txs {
                        if tx.send((seq, frame.clone())).is_err() {
                            break 'read;
                        }
                    }
                }
                reads.errors
            })
            .map_err(|e| AppError::config("per-model", format!("cannot start the decode thread: {e}")))?;
        let mut rec = Recorder::new(setup, epoch);
        let mut pending: Vec<Option<(Outcome, usize)>> = (0..window).map(|_| None).collect();
        let mut next = 0u64;
        for (seq, i, times) in res_rx.iter() {
            for o in meta_rx.try_iter() {
                let slot = &mut pending[(o.seq % window as u64) as usize];
                assert!(slot.is_none(), "per-model: more frames in flight than the join window");
                *slot = Some((o, 0));
            }
            let Some((o, got)) = pending[(seq % window as u64) as usize].as_mut() else {
                unreachable!("a model finished a frame the collector was not told of")
            };
            o.branches[i] = Some(times);
            *got += 1;
            // Emit every complete frame, in order.
            loop {
                let slot = &mut pending[(next % window as u64) as usize];
                match slot {
                    Some((o, got)) if o.seq == next && *got == n => {
                        let (o, _) = slot.take().expect("matched above");
                        let names = &setup.names;
                        rec.deliver(&o, |b| names[b].clone());
                        progress.frame();
                        next += 1;
                    }
                    _ => break,
                }
            }
        }
        let errors = decoder.join().unwrap_or_default();
        let slowest = (0..n).map(|i| rec.model_s(i)).fold(0.0, f64::max);
        let bound = match (rec.mean_s(0), slowest) {
            (d, w) if d > 0.0 && w > 0.0 => (1.0 / d).min(1.0 / w),
            _ => 0.0,
        };
        Ok(rec.finish(Mode::PerModel, setup, 1, window, bound, errors))
    })
}

/// Reads one video as one stream of shared frames, timing each read for the trace.
struct SharedSource {
    inner: VideoSource,
    frames: SharedFrames,
    spans: Arc<Mutex<Vec<(u32, Instant, Instant)>>>,
    stream: u32,
    record: bool,
}

impl framepipe::Source for SharedSource {
    type Item = SharedFrame;
    type Error = VideoError;
    fn next(&mut self) -> Option<Result<SharedFrame, VideoError>> {
        let t0 = Instant::now();
        let r = self.inner.read_frame();
        if self.record && r.is_some() {
            self.spans.lock().unwrap_or_else(|e| e.into_inner()).push((self.stream, t0, Instant::now()));
        }
        r.map(|r| r.map(|f| self.frames.share(f)))
    }
}

fn run_pipelined(setup: &Setup, progress: &dyn Progress) -> Result<ModeRun, AppError> {
    let opts = setup.opts;
    let mut popts = opts.pipeline.clone();
    if opts.realtime {
        // Every source is paced like a camera, at the first video's frame rate.
        popts.pace = Pace::Period(Duration::from_secs_f64(1.0 / setup.infos[0].fps.unwrap_or(30.0)));
    }
    let streams = setup.videos.len();
    let live = popts.live_frames_multi(setup.models.len(), streams);
    let spans_at = Arc::new(Mutex::new(Vec::new()));
    let mut sources = Vec::new();
    for (i, v) in setup.videos.iter().enumerate() {
        let inner =
            VideoSource::open_with(&SourceSpec::File(v.clone()), live, &opts.open_options())?.with_limit(opts.frames);
        sources.push(SharedSource {
            inner,
            frames: SharedFrames::new(live),
            spans: spans_at.clone(),
            stream: i as u32,
            record: opts.spans,
        });
    }
    let branches: Vec<(String, Arc<DetectModel>)> =
        setup.names.iter().cloned().zip(setup.models.iter().cloned()).collect();
    let mut pipeline = build_multi_pipeline(&branches, sources, &popts)?;
    let names: Vec<String> = pipeline.stage_names().to_vec();
    let r = popts.replicas;
    let replicas = [r.pre, r.infer, r.post];
    let epoch = Instant::now();
    let mut order = OrderTracker::default();
    let mut spans = Vec::new();
    let mut latencies = Vec::new();
    let mut decode_errors = Vec::new();
    let mut join = hist();
    while let Some(out) = pipeline.recv() {
        let now = Instant::now();
        order.see(out.seq());
        if out.result().is_ok() {
            // The join merged every branch's stamps: the latest exit is the slowest branch's end.
            let last = out.stamps().iter().map(|st| st.exit_ns).max().unwrap_or(0);
            let total = now.saturating_duration_since(out.captured_at()).as_nanos() as u64;
            join.saturating_record(total.saturating_sub(last).max(1));
        }
        if opts.spans {
            for (k, st) in out.stamps().iter().enumerate() {
                if !st.is_set() {
                    continue;
                }
                let stage: &'static str = ["pre", "infer", "post"][k % 3];
                let lane = if replicas[k % 3] > 1 { format!("{}#{}", names[k], st.replica) } else { names[k].clone() };
                let start = out.captured_at() + Duration::from_nanos(st.enter_ns);
                let end = out.captured_at() + Duration::from_nanos(st.exit_ns);
                spans.push(span(&lane, stage, out.seq(), epoch, start, end));
            }
        }
        match out.result() {
            Ok(_) => latencies.push(now.saturating_duration_since(out.captured_at()).as_secs_f64() * 1e6),
            Err(framepipe::Tombstone::Source { error }) => decode_errors.push(error.to_string()),
            Err(_) => {}
        }
        progress.frame();
    }
    let report = pipeline.close()?;
    if opts.spans {
        let decoded = spans_at.lock().unwrap_or_else(|e| e.into_inner());
        let mut seqs = vec![0u64; streams];
        for (s, a, b) in decoded.iter() {
            let lane = source_name(*s as usize, streams);
            spans.push(span(&lane, "decode", seqs[*s as usize], epoch, *a, *b));
            seqs[*s as usize] += 1;
        }
    }
    Ok(ModeRun {
        mode: Mode::Pipelined,
        report,
        out_of_order: order.stats,
        parallelism: r.infer,
        decode_errors,
        spans,
        latencies_us: latencies,
        join_overhead_us: Some(Percentiles::of(&join)),
    })
}
