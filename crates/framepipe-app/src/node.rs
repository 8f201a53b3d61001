//! The perception node: what a robot embeds. A config file in, ordered results out, a clean stop on
//! a signal.
//!
//! ```no_run
//! use framepipe_app::config::NodeConfig;
//! use framepipe_app::node::PerceptionNode;
//!
//! let cfg = NodeConfig::from_file("configs/perception-node.toml".as_ref())?;
//! let mut node = PerceptionNode::start(&cfg)?;
//! node.stop_on_signals()?; // SIGINT/SIGTERM: stop capturing, drain, end the iterator
//! for result in node.results() {
//!     // In capture order: sequence number, capture time, detections, per-stage timings.
//!     println!("#{} {} detections, {:?} after capture", result.seq(), result.detections().len(), result.latency());
//! }
//! let report = node.finish()?; // counters, latency percentiles and windows, why it ended
//! assert!(!report.end.is_failure());
//! # Ok::<(), framepipe_app::AppError>(())
//! ```
//!
//! [`PerceptionNode::run`] takes a callback instead of the iterator. A [`StopHandle`] stops the node
//! from any thread. Nothing here hangs: a source that dies ends the results (after the frames in
//! flight) or is reconnected; a read that never returns is reported as a stall after
//! `source.stall_timeout_ms`; shutdown drains for at most `run.close_timeout_ms`, then cancels, then
//! gives up on the stages that still do not finish (and says so).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use framepipe::pool::Pooled;
use framepipe::{Envelope, Meta, Monitor, Pace, PipelineError, RecvError, StageStamp, Tombstone};
use framepipe_video::mjpeg::MjpegServer;
use framepipe_vision::{Detection, Frame, Labels};
use serde::Serialize;

use crate::camera::{
    CameraReport, CameraSource, CaptureOptions, CaptureShared, EndReason, LatencyStats, Outcome, SourceMeta,
    StreamReport, StreamTally, Summary, ViewReport,
};
use crate::config::{NodeConfig, Resolved};
use crate::stages::{build_streams_pipeline, Detected, DetectionPipeline, PipelineOptions, Replicas};
use crate::{AppError, DetectModel};

/// How often the node looks at its stop flags, the duration and the stall watch while it waits.
const TICK: Duration = Duration::from_millis(100);

/// How often the live statistics are refreshed.
const LIVE_EVERY: Duration = Duration::from_millis(500);

/// Rates are taken over this many refreshes (5 s).
const RATE_SAMPLES: usize = 10;

/// Stops a node from any thread: capture stops, the frames in flight drain, and the results end.
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the node to stop. Never blocks.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long one frame spent in one stage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageTiming<'a> {
    /// The stage (`pre`, `infer`, `post`, `annotate`).
    pub name: &'a str,
    /// Which replica ran it.
    pub replica: u16,
    /// When the frame entered the stage, after its capture.
    pub enter: Duration,
    /// When it left the stage, after its capture.
    pub exit: Duration,
}

impl StageTiming<'_> {
    /// Time inside the stage.
    pub fn service(&self) -> Duration {
        self.exit.saturating_sub(self.enter)
    }
}

/// One frame's result, delivered in capture order. Holds its frame and detections on loan from the
/// pipeline's pools: they go back when the result is dropped.
pub struct NodeResult {
    meta: Meta,
    frame: Option<Pooled<Frame>>,
    detections: Option<Pooled<Vec<Detection>>>,
    error: Option<Tombstone>,
    delivered: Instant,
    captured_wall: SystemTime,
    camera_lag: Option<Duration>,
    stages: Arc<[String]>,
}

impl std::fmt::Debug for NodeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeResult")
            .field("seq", &self.meta.seq)
            .field("detections", &self.detections().len())
            .field("error", &self.error)
            .finish()
    }
}

impl NodeResult {
    /// The sequence number: 0, 1, 2, … in capture order, without holes (frames dropped at the
    /// entrance never get one).
    pub fn seq(&self) -> u64 {
        self.meta.seq
    }

    /// The stream (source) it came from: 0 for `source.uri`, `i + 1` for `source.extra[i]`. Results
    /// come out in capture order within each stream.
    pub fn stream(&self) -> u32 {
        self.meta.stream
    }

    /// When the frame was captured (read from the camera), on the monotonic clock.
    pub fn captured_at(&self) -> Instant {
        self.meta.captured_at
    }

    /// The capture time on the wall clock (for message headers).
    pub fn captured_wall(&self) -> SystemTime {
        self.captured_wall
    }

    /// When the result was delivered.
    pub fn delivered_at(&self) -> Instant {
        self.delivered
    }

    /// Capture → delivery.
    pub fn latency(&self) -> Duration {
        self.delivered.saturating_duration_since(self.meta.captured_at)
    }

    /// How far the read lagged behind the camera's own clock, if the source has timestamps.
    pub fn camera_lag(&self) -> Option<Duration> {
        self.camera_lag
    }

    /// The detections, in frame pixels, best first (none if the frame failed or was skipped).
    pub fn detections(&self) -> &[Detection] {
        self.detections.as_deref().map_or(&[], |d| d.as_slice())
    }

    /// The frame (annotated if the pipeline draws), if it was processed.
    pub fn frame(&self) -> Option<&Frame> {
        self.frame.as_deref()
    }

    /// Takes the frame out of the result (to keep it past the result).
    pub fn take_frame(&mut self) -> Option<Pooled<Frame>> {
        self.frame.take()
    }

    /// Why the frame has no detections: skipped for the deadline, a stage error, a source error.
    pub fn error(&self) -> Option<&Tombstone> {
        self.error.as_ref()
    }

    /// Whether the frame was processed.
    pub fn is_processed(&self) -> bool {
        self.error.is_none()
    }

    /// Per-stage timings, in stage order.
    pub fn stages(&self) -> impl Iterator<Item = StageTiming<'_>> + '_ {
        self.meta.stamps().iter().zip(self.stages.iter()).map(|(s, name): (&StageStamp, &String)| StageTiming {
            name,
            replica: s.replica,
            enter: Duration::from_nanos(s.enter_ns),
            exit: Duration::from_nanos(s.exit_ns),
        })
    }
}

/// Live statistics, as the view's `/stats` serves them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveStats {
    /// `running`, `reconnecting`, `stopping` or `ended`.
    pub state: &'static str,
    /// The source (the first, when there are several).
    pub source: String,
    /// How many sources (streams) feed the node.
    pub streams: usize,
    /// The admission policy.
    pub admission: String,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Results per second, recently.
    pub fps: f64,
    /// Frames captured per second, recently.
    pub camera_fps: f64,
    /// Capture → result latency of recent results, median, ms.
    pub latency_p50_ms: Option<f64>,
    /// Capture → result latency of recent results, 99th percentile, ms.
    pub latency_p99_ms: Option<f64>,
    /// Frames captured.
    pub captured: u64,
    /// Frames dropped by the admission policy.
    pub dropped: u64,
    /// Frames processed.
    pub processed: u64,
    /// Frames skipped for the deadline.
    pub skipped: u64,
    /// Frames that failed.
    pub errored: u64,
    /// Successful reconnections.
    pub reconnects: u64,
}

/// A running perception node: capture, detection pipeline, ordered results, optional MJPEG view.
pub struct PerceptionNode {
    pipeline: Option<DetectionPipeline>,
    monitor: Monitor,
    stages: Arc<[String]>,
    /// Per stream: its capture thread's shared state.
    captures: Vec<Arc<CaptureShared>>,
    stop: Arc<AtomicBool>,
    signal: Arc<AtomicBool>,
    signal_ids: Vec<signal_hook::SigId>,
    stats: LatencyStats,
    view: Option<MjpegServer>,
    cfg: Resolved,
    /// Per stream: the source as it announced itself.
    sources: Vec<SourceMeta>,
    /// Per stream: what its results were.
    tallies: Vec<StreamTally>,
    model: String,
    engine: String,
    labels: Arc<Labels>,
    started: Instant,
    started_wall: SystemTime,
    stopping: Option<(EndReason, Instant)>,
    cancelled: bool,
    ended: bool,
    live: LiveStats,
    live_at: Instant,
    /// (when, captured, processed) over the last few seconds, for the rates.
    rates: std::collections::VecDeque<(Instant, u64, u64)>,
    tuned: Option<crate::tune::Tuned>,
}

impl std::fmt::Debug for PerceptionNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let uris: Vec<&str> = self.sources.iter().map(|s| s.uri.as_str()).collect();
        f.debug_struct("PerceptionNode").field("sources", &uris).field("ended", &self.ended).finish()
    }
}

impl PerceptionNode {
    /// Checks the config, loads the model, opens the source, builds the pipeline and starts it (and
    /// the view, if configured).
    pub fn start(cfg: &NodeConfig) -> Result<Self, AppError> {
        let resolved = cfg.resolve()?;
        let model = DetectModel::load(&resolved.model_path, &resolved.model)?;
        Self::start_resolved(model, resolved, true)
    }

    /// Like [`start`](PerceptionNode::start), with a model already loaded (its `[model]` section is
    /// then only checked).
    pub fn with_model(model: Arc<DetectModel>, cfg: &NodeConfig) -> Result<Self, AppError> {
        Self::start_resolved(model, cfg.resolve()?, false)
    }

    /// `reload`: the model was loaded from the config's `[model]`, so tuning may load it again at
    /// other thread counts.
    fn start_resolved(mut model: Arc<DetectModel>, cfg: Resolved, reload: bool) -> Result<Self, AppError> {
        let mut popts = cfg.pipeline.clone();
        // Tuning picks the replicas after the source is open: size its pool for the most they can be.
        let pool_opts = if cfg.tune {
            let n = framepipe::available_cores().len().max(4);
            PipelineOptions { replicas: Replicas { pre: n, infer: n, post: n }, ..popts.clone() }
        } else {
            popts.clone()
        };
        if cfg.serve.is_some() && popts.annotate.is_none() {
            popts.annotate = Some(None);
        }
        // How a source is paced, from what it announced.
        let pace = |info: &framepipe_video::VideoInfo| {
            if info.live {
                // The read blocks at the camera's pace.
                Pace::Free
            } else if cfg.realtime {
                Pace::fps(info.fps.unwrap_or(30.0))
            } else {
                Pace::JustInTime
            }
        };
        // One capture per source, each with its own reader thread and frame pool; stream i is
        // `sources[i]`.
        let mut captures = Vec::new();
        let mut sources: Vec<(CameraSource, Pace)> = Vec::new();
        let mut metas: Vec<SourceMeta> = Vec::new();
        for spec in cfg.sources() {
            let capture = CaptureShared::new();
            let source = CameraSource::open(
                CaptureOptions {
                    spec: spec.clone(),
                    open: cfg.open.clone(),
                    stall_timeout: cfg.stall_timeout,
                    // Reconnection is for live sources; a file among several ends as a file does.
                    reconnect: if spec.is_live() { cfg.reconnect } else { crate::config::Reconnect::NEVER },
                    // What the pipeline holds, plus the frame being read, the one handed over and the
                    // one waiting to enter.
                    pool: pool_opts.live_frames() + 3,
                    max_frames: cfg.max_frames,
                    pin: popts.pins.decode.clone(),
                },
                capture.clone(),
            )?;
            let info = source.info();
            metas.push(SourceMeta::new(spec, info, cfg.realtime && !info.live));
            let p = pace(info);
            captures.push(capture);
            sources.push((source, p));
        }
        let info = sources[0].0.info().clone();
        let tuned = if cfg.tune {
            // Calibrate on blank frames of the source's size: a live source's frames are not
            // ours to spend, and its decode time is the camera's pace.
            let frames = crate::tune::blank_frames(info.width, info.height, crate::tune::CALIBRATION_FRAMES)?;
            let mopts = cfg.model.clone();
            let cores = framepipe::available_cores();
            let device = crate::tune::device_of(model.selection().kind);
            let threads = if reload {
                crate::tune::thread_candidates(cores.len(), device, mopts.engine_options.intra_threads)
            } else {
                vec![mopts.engine_options.intra_threads]
            };
            let path = model.path().to_path_buf();
            let cal = crate::tune::calibrate_frames(model.clone(), &path, &mopts, &frames, 0.0, &threads)?;
            let (tuned, m) = crate::tune::finish(cal, cores, device)?;
            model = m;
            crate::tune::ApplyPlan::apply(&tuned.plan, &mut popts);
            // The capture thread is already running: it keeps the config's pin.
            popts.pins.decode = cfg.pipeline.pins.decode.clone();
            Some(tuned)
        } else {
            None
        };
        let view = match &cfg.serve {
            None => None,
            Some(o) => {
                let mut o = o.clone();
                o.max_fps = info.fps;
                o.title = format!("framepipe: {}", info.source);
                Some(
                    MjpegServer::start(&o)
                        .map_err(|e| AppError::Config { name: "serve.addr".into(), reason: e.to_string() })?,
                )
            }
        };
        let pipeline = build_streams_pipeline(
            model.clone(),
            sources,
            &popts,
            Some((info.fps.unwrap_or(30.0), info.width, info.height)),
        )?;
        let stages: Arc<[String]> = pipeline.stage_names().to_vec().into();
        let now = Instant::now();
        Ok(PerceptionNode {
            monitor: pipeline.monitor(),
            pipeline: Some(pipeline),
            stages,
            tallies: metas.iter().map(|_| StreamTally::new()).collect(),
            captures,
            stop: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicBool::new(false)),
            signal_ids: Vec::new(),
            stats: LatencyStats::new(cfg.window, cfg.series),
            view,
            model: model.path().display().to_string(),
            engine: model.selection().kind.to_string(),
            labels: model.labels().clone(),
            sources: metas,
            cfg,
            started: now,
            started_wall: SystemTime::now(),
            stopping: None,
            cancelled: false,
            ended: false,
            live: LiveStats::default(),
            live_at: now - LIVE_EVERY,
            rates: std::collections::VecDeque::with_capacity(RATE_SAMPLES + 2),
            tuned,
        })
    }

    /// The plan `pipeline.tune = true` chose at start (with its measurements and reasons), if it
    /// was asked for.
    pub fn tuned(&self) -> Option<&crate::tune::Tuned> {
        self.tuned.as_ref()
    }

    /// Stops the node on SIGINT or SIGTERM: capture stops, the frames in flight drain, the results
    /// end, and [`finish`](PerceptionNode::finish) reports [`EndReason::Signal`]. A second signal
    /// exits the process at once with status 130 (for a drain that takes too long for someone's
    /// patience). The handlers are removed when the node is dropped.
    pub fn stop_on_signals(&mut self) -> Result<(), AppError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let err = |e: std::io::Error| AppError::Config { name: "signal handlers".into(), reason: e.to_string() };
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so that it sees the flag the first signal sets only on the second.
            self.signal_ids
                .push(signal_hook::flag::register_conditional_shutdown(sig, 130, self.signal.clone()).map_err(err)?);
            self.signal_ids.push(signal_hook::flag::register(sig, self.signal.clone()).map_err(err)?);
        }
        Ok(())
    }

    /// A handle that stops the node from any thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// The stages' names, in order.
    pub fn stage_names(&self) -> &[String] {
        &self.stages
    }

    /// The model's class names (for [`Detection::class_id`]).
    pub fn labels(&self) -> &Arc<Labels> {
        &self.labels
    }

    /// The model file and the engine running it.
    pub fn model(&self) -> (&str, &str) {
        (&self.model, &self.engine)
    }

    /// The source as it announced itself (stream 0's, when there are several).
    pub fn source(&self) -> &SourceMeta {
        &self.sources[0]
    }

    /// Every source as it announced itself, by stream id.
    pub fn sources(&self) -> &[SourceMeta] {
        &self.sources
    }

    /// The view's address, if serving.
    pub fn view_url(&self) -> Option<String> {
        self.view.as_ref().map(|v| v.url())
    }

    /// The next result in capture order, waiting for it; `None` once the node has ended (the source
    /// ended or died, a stop was asked for, the duration passed) and every frame in flight came out.
    pub fn next_result(&mut self) -> Option<NodeResult> {
        if self.ended {
            return None;
        }
        loop {
            self.watch();
            if let Some((_, since)) = self.stopping {
                let waited = since.elapsed();
                if waited > self.cfg.close_timeout && !self.cancelled {
                    // Draining takes too long: let stages that watch the cancel token return early.
                    self.cancelled = true;
                    if let Some(p) = &self.pipeline {
                        p.cancel();
                    }
                }
                if waited > self.cfg.close_timeout * 2 {
                    // What is still inside is left to `finish`, which gives up on it without hanging.
                    self.ended = true;
                    return None;
                }
            }
            let pipeline = self.pipeline.as_mut().expect("the pipeline lives until finish");
            match pipeline.recv_timeout(TICK) {
                Ok(env) => {
                    let r = self.accept(env);
                    self.refresh_live(false);
                    return Some(r);
                }
                Err(RecvError::Timeout) => self.refresh_live(false),
                Err(RecvError::Ended) => {
                    self.ended = true;
                    self.refresh_live(true);
                    return None;
                }
            }
        }
    }

    /// Iterates over the results until the node ends (see [`next_result`](PerceptionNode::next_result)).
    pub fn results(&mut self) -> impl Iterator<Item = NodeResult> + '_ {
        std::iter::from_fn(move || self.next_result())
    }

    /// Calls `f` with every result until the node ends, then finishes it.
    pub fn run(mut self, mut f: impl FnMut(NodeResult)) -> Result<CameraReport, AppError> {
        while let Some(r) = self.next_result() {
            f(r);
        }
        self.finish()
    }

    /// Starts stopping: capture ends, admission closes, the frames inside drain.
    fn begin_stop(&mut self, why: EndReason) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some((why, Instant::now()));
        self.captures.iter().for_each(|c| c.stop());
        if let Some(p) = &self.pipeline {
            match why {
                // Finish the frames inside normally.
                EndReason::Duration => p.finish(),
                // Stop, and let stages that watch the cancel token return early.
                _ => p.cancel(),
            }
        }
    }

    /// Stop requests and the duration. (A stalled source ends itself: see [`CameraSource`].)
    fn watch(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        if self.signal.load(Ordering::SeqCst) {
            self.begin_stop(EndReason::Signal);
        } else if self.stop.load(Ordering::SeqCst) {
            self.begin_stop(EndReason::Stopped);
        } else if self.cfg.duration.is_some_and(|d| self.started.elapsed() >= d) {
            self.begin_stop(EndReason::Duration);
        }
    }

    fn accept(&mut self, env: Envelope<Detected>) -> NodeResult {
        let delivered = Instant::now();
        let (meta, payload) = env.into_parts();
        let (frame, detections, error) = match payload {
            Ok(d) => (Some(d.frame), Some(d.detections), None),
            Err(t) => (None, None, Some(t)),
        };
        let outcome = match &error {
            None => Outcome::Processed,
            Some(t) if t.is_skip() => Outcome::Skipped,
            Some(_) => Outcome::Errored,
        };
        let stream = meta.stream as usize;
        let camera_lag = frame.as_deref().and_then(|f| self.captures.get(stream)?.lag_of(f));
        self.stats.record(meta.captured_at, delivered, outcome, camera_lag);
        if let Some(t) = self.tallies.get_mut(stream) {
            t.record(delivered.saturating_duration_since(meta.captured_at), outcome);
        }
        // The view shows stream 0.
        if let (Some(view), Some(f), 0) = (&self.view, frame.as_deref(), stream) {
            view.publish(f.as_ref());
        }
        let captured_wall = match meta.captured_at.checked_duration_since(self.started) {
            Some(d) => self.started_wall + d,
            None => self.started_wall - self.started.saturating_duration_since(meta.captured_at),
        };
        NodeResult { meta, frame, detections, error, delivered, captured_wall, camera_lag, stages: self.stages.clone() }
    }

    /// Live statistics, refreshed every half second while the node is read: rates over the last 5 s,
    /// latency percentiles of the current window (the view serves them at `/stats`).
    pub fn live_stats(&self) -> &LiveStats {
        &self.live
    }

    fn refresh_live(&mut self, force: bool) {
        let now = Instant::now();
        if now.saturating_duration_since(self.live_at) < LIVE_EVERY && !force {
            return;
        }
        self.live_at = now;
        let r = self.monitor.report();
        self.rates.push_back((now, r.frames_in, r.processed));
        while self.rates.len() > RATE_SAMPLES + 1 {
            self.rates.pop_front();
        }
        let (fps, camera_fps) = match (self.rates.front(), self.rates.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = b.0.duration_since(a.0).as_secs_f64();
                ((b.2 - a.2) as f64 / dt, (b.1 - a.1) as f64 / dt)
            }
            _ => (0.0, 0.0),
        };
        let (p50, p99) = self.stats.live_percentiles();
        self.live = LiveStats {
            state: if self.ended {
                "ended"
            } else if self.stopping.is_some() {
                "stopping"
            } else if self.captures.iter().any(|c| c.reconnecting()) {
                "reconnecting"
            } else {
                "running"
            },
            source: self.sources[0].uri.clone(),
            streams: self.sources.len(),
            admission: r.admission.to_string(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            fps,
            camera_fps,
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            captured: r.frames_in,
            dropped: r.dropped,
            processed: r.processed,
            skipped: r.skipped,
            errored: r.errored,
            reconnects: self.captures.iter().map(|c| c.reconnects()).sum(),
        };
        if let Some(view) = &self.view {
            if let Ok(json) = serde_json::to_string(&self.live) {
                view.set_stats(json);
            }
        }
    }

    /// Stops the node if it is still running, drains the frames in flight (at most
    /// `run.close_timeout_ms`, then cancels, then gives up on what still does not finish), stops the
    /// view, and returns the camera report.
    pub fn finish(mut self) -> Result<CameraReport, AppError> {
        if !self.ended {
            self.begin_stop(EndReason::Stopped);
            while self.next_result().is_some() {}
        }
        let pipeline = self.pipeline.take().expect("finish runs once");
        let (report, pipeline_error) = match pipeline.close_timeout(self.cfg.close_timeout) {
            Ok(r) => (r, None),
            Err(PipelineError::Hung { threads, report }) => {
                let msg = format!("threads {threads:?} did not finish within the close timeout and were left behind");
                (*report, Some(msg))
            }
            // A stage panicked: the report is inside the error.
            Err(e) => return Err(e.into()),
        };
        let view = self.view.take().map(|v| {
            let c = v.counters();
            let url = v.url();
            v.shutdown();
            ViewReport {
                url,
                published: c.published,
                encoded: c.encoded,
                served: c.served,
                skipped: c.throttled + c.replaced,
            }
        });
        // Per stream: how its source ended. The node's end is the stop that was asked for, else the
        // first failure, else every source ended.
        let failures: Vec<Option<(EndReason, String)>> = self.captures.iter().map(|c| c.failure()).collect();
        let failure = match failures.as_slice() {
            [one] => one.clone(),
            many => {
                let failed: Vec<(usize, &(EndReason, String))> =
                    many.iter().enumerate().filter_map(|(i, f)| Some((i, f.as_ref()?))).collect();
                failed.first().map(|(_, (how, _))| {
                    let text: Vec<String> = failed
                        .iter()
                        .map(|(i, (_, why))| format!("stream {i} ({}): {why}", self.sources[*i].uri))
                        .collect();
                    (*how, text.join("; "))
                })
            }
        };
        let end = match (self.stopping.map(|s| s.0), &failure) {
            (Some(why), _) => why,
            (None, Some((how, _))) => *how,
            (None, None) => EndReason::SourceEnded,
        };
        let streams: Vec<StreamReport> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, source)| {
                let rt = report.streams.iter().find(|s| s.id == i as u32);
                let t = &self.tallies[i];
                let (s_end, s_error) = match (&failures[i], self.stopping.map(|s| s.0)) {
                    (Some((how, why)), _) => (*how, Some(why.clone())),
                    (None, Some(why)) => (why, None),
                    (None, None) => (EndReason::SourceEnded, None),
                };
                StreamReport {
                    id: i as u32,
                    source: source.clone(),
                    end: s_end,
                    error: s_error,
                    captured: rt.map_or(0, |s| s.frames_in),
                    admitted: rt.map_or(0, |s| s.admitted),
                    dropped: rt.map_or(0, |s| s.dropped),
                    frames_out: rt.map_or(0, |s| s.frames_out),
                    processed: t.processed,
                    skipped: t.skipped,
                    errored: t.errored,
                    reordered: rt.map_or(0, |s| s.reordered),
                    latency_us: Summary::of(&t.latency).unwrap_or_default(),
                    reconnects: self.captures[i].reconnects(),
                }
            })
            .collect();
        let error = match (end.is_failure(), failure, pipeline_error) {
            (true, Some((_, f)), Some(p)) => Some(format!("{f}; {p}")),
            (true, Some((_, f)), None) => Some(f),
            (_, _, Some(p)) => Some(p),
            _ => None,
        };
        let stats = std::mem::replace(&mut self.stats, LatencyStats::new(Duration::from_secs(1), false));
        let (latency_windows, camera_lag_us, camera_latency_us, series) = stats.finish();
        let capture_s = report.uptime_s.max(1e-9);
        Ok(CameraReport {
            source: self.sources[0].clone(),
            streams,
            model: self.model.clone(),
            engine: self.engine.clone(),
            admission: report.admission.to_string(),
            deadline_ms: self.cfg.pipeline.deadline.map(|d| d.as_millis() as u64),
            max_in_flight: report.max_in_flight,
            end,
            error,
            duration_s: self.started.elapsed().as_secs_f64(),
            captured: report.frames_in,
            admitted: report.admitted,
            dropped: report.dropped,
            skipped: report.skipped,
            errored: report.errored,
            processed: report.processed,
            source_errors: report.source_errors,
            lost: report.lost,
            reordered: report.reordered,
            camera_fps: report.frames_in as f64 / capture_s,
            processed_fps: report.throughput_fps,
            latency_us: report.latency_us.into(),
            latency_windows,
            window_s: self.cfg.window.as_secs_f64(),
            camera_lag_us,
            camera_latency_us,
            reconnects: self.captures.iter().map(|c| c.reconnects()).sum(),
            reconnect_attempts: self.captures.iter().map(|c| c.reconnect_attempts()).sum(),
            view,
            stages: serde_json::to_value(&report.stages).unwrap_or_default(),
            notices: report.notices.clone(),
            series,
        })
    }
}

impl Drop for PerceptionNode {
    fn drop(&mut self) {
        for id in self.signal_ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        // A source may be waiting out a reconnection backoff; the pipeline's own drop does the rest.
        self.captures.iter().for_each(|c| c.stop());
    }
}
