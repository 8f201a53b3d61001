//! The camera demo's parts: a capture source that reconnects and reports stalls, latency windows,
//! the camera report (`docs/formats.md`, "Camera report") and its plot.
//!
//! The pipeline's own source thread captures: it reads the camera at the camera's pace
//! ([`Pace::Free`](framepipe::Pace::Free) for a live source, a fixed period for a file played in real
//! time), and the runtime stamps each frame's capture time when the read returns. The admission
//! policy then decides what enters. [`PerceptionNode`](crate::node::PerceptionNode) runs all of it.
//!
//! Besides the capture stamp, a source with its own timestamps (a timestamped stream, a file, a
//! V4L2 camera) tells how far each read lags behind the camera's clock: the *camera lag*, relative
//! to the least-lagged frame of the connection. A pipeline that keeps up reads every frame as soon
//! as it exists (lag ≈ 0); one that blocks the capture thread leaves frames waiting in the camera's
//! own buffers (OpenCV's, FFmpeg's, the network's, the peer's), and the lag grows. The *camera
//! latency* (camera clock → result) is that lag plus the capture → result latency.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use framepipe::pool::Pooled;
use framepipe::Percentiles;
use framepipe_video::{OpenOptions, SourceSpec, VideoError, VideoInfo, VideoSource};
use framepipe_vision::Frame;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::Reconnect;
use crate::AppError;

/// How often waits look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// How to capture.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// The source.
    pub spec: SourceSpec,
    /// Time limits for network streams.
    pub open: OpenOptions,
    /// A read (or an open) that takes longer than this is a stall.
    pub stall_timeout: Duration,
    /// Reconnection policy.
    pub reconnect: Reconnect,
    /// Frames the source's pool keeps.
    pub pool: usize,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    /// Cores for the reading thread (empty: not pinned).
    pub pin: Vec<usize>,
}

/// Why capture failed for one read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The source failed (a dead stream, a decode error).
    #[error(transparent)]
    Video(#[from] VideoError),
    /// A read did not return within the stall timeout.
    #[error(
        "video source {source_name} stalled: a read has not returned for {:.1} s (the stall timeout), after {frames} frames",
        after.as_secs_f64()
    )]
    Stalled {
        /// The source.
        source_name: String,
        /// The stall timeout.
        after: Duration,
        /// Frames delivered before.
        frames: u64,
    },
    /// Reconnecting failed every time.
    #[error("video source {source_name}: gave up after {attempts} reconnection attempts; last: {last}")]
    GaveUp {
        /// The source.
        source_name: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: String,
    },
}

/// What the capture shares with the node: the stop flag, reconnection counters, the final failure,
/// and the camera lag of frames on their way.
pub struct CaptureShared {
    stop: AtomicBool,
    reconnects: AtomicU64,
    attempts: AtomicU64,
    reconnecting: AtomicBool,
    failure: Mutex<Option<(EndReason, String)>>,
    lags: Mutex<LagMap>,
}

impl std::fmt::Debug for CaptureShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureShared").field("reconnects", &self.reconnects()).finish()
    }
}

impl CaptureShared {
    /// A fresh state.
    pub fn new() -> Arc<Self> {
        Arc::new(CaptureShared {
            stop: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            reconnecting: AtomicBool::new(false),
            failure: Mutex::new(None),
            lags: Mutex::new(LagMap::default()),
        })
    }

    /// Asks the capture to end at its next chance: a wait for a read, or a reconnection backoff, ends
    /// within 50 ms.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Successful reconnections.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Reconnection attempts (successful or not).
    pub fn reconnect_attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Whether the source is between a failure and a reconnection.
    pub fn reconnecting(&self) -> bool {
        self.reconnecting.load(Ordering::Relaxed)
    }

    /// How and why the source ended with an error ([`EndReason::SourceDied`] or
    /// [`EndReason::Stalled`]), if it did.
    pub fn failure(&self) -> Option<(EndReason, String)> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records how and why the source ended with an error (the first one wins).
    pub fn set_failure(&self, how: EndReason, why: String) {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert((how, why));
    }

    /// The camera lag of `frame`, recorded when it was read.
    pub fn lag_of(&self, frame: &Frame) -> Option<Duration> {
        self.lags.lock().unwrap_or_else(|e| e.into_inner()).get(frame.data().as_ptr() as usize)
    }
}

/// Camera lag per frame buffer. A pooled buffer holds one frame at a time, and its entry is
/// rewritten when the buffer is read into again, so the buffer's address identifies the frame.
/// A few dozen entries (the pool), searched linearly; no allocation once they exist.
#[derive(Default)]
struct LagMap {
    entries: Vec<(usize, Option<Duration>)>,
}

impl LagMap {
    fn put(&mut self, key: usize, lag: Option<Duration>) {
        match self.entries.iter_mut().find(|e| e.0 == key) {
            Some(e) => e.1 = lag,
            None => {
                if self.entries.len() >= 256 {
                    // Buffers of sources closed by reconnections; their frames are long gone.
                    self.entries.clear();
                }
                self.entries.push((key, lag));
            }
        }
    }

    fn get(&self, key: usize) -> Option<Duration> {
        self.entries.iter().find(|e| e.0 == key).and_then(|e| e.1)
    }
}

/// The longest an open may take: the network limits plus the stall timeout (a GStreamer pipeline or
/// a camera has no limit of its own).
fn open_limit(o: &CaptureOptions) -> Duration {
    o.open.open_timeout.unwrap_or_default() + o.open.read_timeout.unwrap_or_default() + o.stall_timeout
}

/// What the reading thread answers.
enum Reply {
    Opened(VideoInfo),
    Frame(Pooled<Frame>),
    End(Option<VideoError>),
}

/// One connection: a thread that owns the OpenCV capture and reads one frame per request, so that
/// the pipeline's source thread can stop waiting for a read that never returns (OpenCV's GStreamer
/// and V4L2 backends have no read timeout). Abandoning it leaves the thread to end when its read
/// returns; it then finds nobody listening and drops the capture.
struct Reader {
    req: crossbeam_channel::Sender<()>,
    rep: crossbeam_channel::Receiver<Reply>,
    name: String,
}

impl Reader {
    /// Starts the thread and waits (at most `limit`, interrupted by a stop) for the source to open.
    fn open(
        o: &CaptureOptions,
        limit: Option<u64>,
        shared: &Arc<CaptureShared>,
        generation: u32,
    ) -> Result<(Reader, VideoInfo), VideoError> {
        let (req_tx, req_rx) = crossbeam_channel::bounded::<()>(1);
        let (rep_tx, rep_rx) = crossbeam_channel::bounded::<Reply>(1);
        let (spec, open, pool, pin) = (o.spec.clone(), o.open.clone(), o.pool, o.pin.clone());
        let lags = shared.clone();
        let name = if generation == 0 { "capture".to_string() } else { format!("capture#{generation}") };
        std::thread::Builder::new()
            .name(name)
            .spawn(move || read_loop(&spec, &open, pool, limit, &pin, &lags, &req_rx, &rep_tx))
            .map_err(|e| VideoError::Open {
                source_name: o.spec.to_string(),
                reason: format!("cannot start a thread: {e}"),
            })?;
        let reader = Reader { req: req_tx, rep: rep_rx, name: o.spec.to_string() };
        match reader.wait(open_limit(o), shared) {
            Some(Reply::Opened(info)) => Ok((reader, info)),
            Some(Reply::End(Some(e))) => Err(e),
            Some(_) => Err(VideoError::NoFrames(o.spec.to_string())),
            None if shared.stopped() => {
                Err(VideoError::Open { source_name: o.spec.to_string(), reason: "stopped while opening".into() })
            }
            None => Err(VideoError::Open {
                source_name: o.spec.to_string(),
                reason: format!(
                    "no first frame within {:.1} s (the source accepted the connection but sends nothing)",
                    open_limit(o).as_secs_f64()
                ),
            }),
        }
    }

    /// The next reply, or `None` after `limit` or on a stop.
    fn wait(&self, limit: Duration, shared: &CaptureShared) -> Option<Reply> {
        let end = Instant::now() + limit;
        loop {
            let now = Instant::now();
            if now >= end || shared.stopped() {
                return None;
            }
            match self.rep.recv_timeout(TICK.min(end - now)) {
                Ok(r) => return Some(r),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Some(Reply::End(Some(VideoError::Died {
                        source_name: self.name.clone(),
                        frames: 0,
                        reason: "its capture thread ended".into(),
                    })))
                }
            }
        }
    }
}

/// Pins the calling thread to `cores` (nothing for an empty list). Best effort: a refusal leaves it
/// unpinned.
fn pin_current(cores: &[usize]) {
    if cores.is_empty() {
        return;
    }
    // SAFETY: `cpu_set_t` is plain data for which all-zero is the empty set; CPU_SET only writes
    // inside it for indices below CPU_SETSIZE (checked), and sched_setaffinity reads `size_of` bytes
    // of it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The reading thread: opens the source, then reads one frame per request and records its camera
/// lag (read time against the stream's own clock, relative to the least-lagged frame of this
/// connection).
#[allow(clippy::too_many_arguments)]
fn read_loop(
    spec: &SourceSpec,
    open: &OpenOptions,
    pool: usize,
    limit: Option<u64>,
    pin: &[usize],
    shared: &CaptureShared,
    req: &crossbeam_channel::Receiver<()>,
    rep: &crossbeam_channel::Sender<Reply>,
) {
    framepipe::prime_thread();
    pin_current(pin);
    let mut source = match VideoSource::open_with(spec, pool, open) {
        Ok(s) => s.with_limit(limit),
        Err(e) => {
            let _ = rep.send(Reply::End(Some(e)));
            return;
        }
    };
    if rep.send(Reply::Opened(source.info().clone())).is_err() {
        return;
    }
    let base = Instant::now();
    let mut min_offset: Option<i128> = None;
    while req.recv().is_ok() {
        let reply = match source.read_frame() {
            Some(Ok(frame)) => {
                let lag = source.stream_time().map(|ts| {
                    let offset = base.elapsed().as_nanos() as i128 - ts.as_nanos() as i128;
                    let min = min_offset.map_or(offset, |m| m.min(offset));
                    min_offset = Some(min);
                    Duration::from_nanos((offset - min) as u64)
                });
                shared.lags.lock().unwrap_or_else(|e| e.into_inner()).put(frame.data().as_ptr() as usize, lag);
                Reply::Frame(frame)
            }
            Some(Err(e)) => Reply::End(Some(e)),
            None => Reply::End(None),
        };
        let end = matches!(reply, Reply::End(_));
        if rep.send(reply).is_err() || end {
            return;
        }
    }
}

/// A camera (or stream, or file) as a [`framepipe::Source`]: reads on a thread of its own (see
/// below), reconnects a live source that dies, and reports a read that does not return within the
/// stall timeout instead of waiting for it forever.
///
/// The pipeline's source thread asks the reading thread for each frame and waits for it; the
/// runtime stamps the capture time when the frame arrives, a hop (tens of µs) after the read
/// returned. A failure is delivered once, as an error for that read (a
/// [`Tombstone::Source`](framepipe::Tombstone) in the output, counted). Without reconnection the
/// stream then ends; with it, the source waits (backoff, cut short by a stop) and reopens, and goes
/// on feeding the same pipeline.
pub struct CameraSource {
    opts: CaptureOptions,
    shared: Arc<CaptureShared>,
    reader: Option<Reader>,
    info: VideoInfo,
    delivered: u64,
    generation: u32,
    attempt: u32,
    last_error: String,
    done: bool,
}

impl CameraSource {
    /// Opens the source before anything starts (waiting at most the open and read timeouts plus the
    /// stall timeout).
    pub fn open(opts: CaptureOptions, shared: Arc<CaptureShared>) -> Result<Self, AppError> {
        let (reader, info) = Reader::open(&opts, opts.max_frames, &shared, 0)?;
        Ok(CameraSource {
            opts,
            shared,
            reader: Some(reader),
            info,
            delivered: 0,
            generation: 0,
            attempt: 0,
            last_error: String::new(),
            done: false,
        })
    }

    /// What the source announced when it first opened.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Frames delivered so far (over every connection).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Waits `d`, or less if a stop is asked for; false if it was.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.shared.stopped() {
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep(TICK.min(end - now));
        }
        false
    }

    /// Reopens the source, with backoff; false if it gave up or was stopped.
    fn reconnect(&mut self) -> bool {
        let r = self.opts.reconnect;
        while self.attempt < r.attempts {
            self.attempt += 1;
            if !self.sleep(r.wait(self.attempt)) {
                return false;
            }
            self.shared.attempts.fetch_add(1, Ordering::Relaxed);
            self.generation += 1;
            let left = self.opts.max_frames.map(|n| n.saturating_sub(self.delivered));
            match Reader::open(&self.opts, left, &self.shared, self.generation) {
                Ok((reader, _)) => {
                    self.reader = Some(reader);
                    self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.shared.reconnecting.store(false, Ordering::Relaxed);
                    return true;
                }
                Err(e) => self.last_error = e.to_string(),
            }
            if self.shared.stopped() {
                return false;
            }
        }
        false
    }

    /// A read failed (or stalled): deliver the error once; reconnect later if allowed.
    fn failed(&mut self, e: CaptureError) -> Option<Result<Pooled<Frame>, CaptureError>> {
        self.reader = None;
        let live = self.opts.spec.is_live();
        if live && self.opts.reconnect.attempts > 0 && !self.shared.stopped() {
            self.last_error = e.to_string();
            self.shared.reconnecting.store(true, Ordering::Relaxed);
        } else {
            self.done = true;
            if live {
                let how =
                    if matches!(e, CaptureError::Stalled { .. }) { EndReason::Stalled } else { EndReason::SourceDied };
                self.shared.set_failure(how, e.to_string());
            }
        }
        Some(Err(e))
    }
}

impl framepipe::Source for CameraSource {
    type Item = Pooled<Frame>;
    type Error = CaptureError;

    fn next(&mut self) -> Option<Result<Pooled<Frame>, CaptureError>> {
        loop {
            if self.done || self.shared.stopped() {
                return None;
            }
            let Some(reader) = &self.reader else {
                if self.reconnect() {
                    continue;
                }
                self.done = true;
                if self.shared.stopped() {
                    return None;
                }
                let e = CaptureError::GaveUp {
                    source_name: self.opts.spec.to_string(),
                    attempts: self.attempt,
                    last: std::mem::take(&mut self.last_error),
                };
                self.shared.set_failure(EndReason::SourceDied, e.to_string());
                return Some(Err(e));
            };
            if reader.req.send(()).is_err() {
                return self.failed(CaptureError::Video(VideoError::Died {
                    source_name: self.opts.spec.to_string(),
                    frames: self.delivered,
                    reason: "the capture thread ended".into(),
                }));
            }
            match reader.wait(self.opts.stall_timeout, &self.shared) {
                Some(Reply::Frame(frame)) => {
                    self.delivered += 1;
                    self.attempt = 0;
                    return Some(Ok(frame));
                }
                Some(Reply::End(None)) => {
                    self.done = true;
                    return None;
                }
                Some(Reply::End(Some(e))) => return self.failed(CaptureError::Video(e)),
                Some(Reply::Opened(_)) => continue,
                None if self.shared.stopped() => return None,
                None => {
                    // The read is stuck in the backend: leave its thread behind (it ends when the read
                    // returns) and report the stall.
                    let e = CaptureError::Stalled {
                        source_name: self.opts.spec.to_string(),
                        after: self.opts.stall_timeout,
                        frames: self.delivered,
                    };
                    return self.failed(e);
                }
            }
        }
    }
}

/// Percentiles in microseconds (as the runtime's [`Percentiles`], readable back from JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
    /// Samples.
    pub count: u64,
}

impl From<Percentiles> for Summary {
    fn from(p: Percentiles) -> Self {
        Summary { p50: p.p50, p90: p.p90, p99: p.p99, max: p.max, count: p.count }
    }
}

impl Summary {
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Summary> {
        (!h.is_empty()).then(|| Percentiles::of(h).into())
    }
}

/// One window of the run, by capture time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyWindow {
    /// Start, seconds after the first capture.
    pub start_s: f64,
    /// End (exclusive).
    pub end_s: f64,
    /// Whether the run captured past its end (the last window of a run usually did not).
    pub complete: bool,
    /// Frames captured in it that were processed.
    pub processed: u64,
    /// Frames captured in it that were skipped for the deadline.
    pub skipped: u64,
    /// Frames captured in it that errored.
    pub errored: u64,
    /// Capture → result latency, median, µs (`null` without processed frames).
    pub p50_us: Option<f64>,
    /// Capture → result latency, 99th percentile, µs.
    pub p99_us: Option<f64>,
    /// Capture → result latency, maximum, µs.
    pub max_us: Option<f64>,
    /// Camera clock → result latency, 99th percentile, µs (`null` if the source has no timestamps).
    pub camera_p99_us: Option<f64>,
}

fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
    h.auto(false);
    h
}

fn us(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e3)
}

/// Delivered-side accounting: latency windows, camera lag and latency, the optional series. Its
/// histograms have a fixed size; recording a frame allocates nothing (a window allocates its entry
/// when it closes, and the series, if kept, grows).
pub struct LatencyStats {
    window: Duration,
    origin: Option<Instant>,
    index: u64,
    win_lat: Histogram<u64>,
    win_cam: Histogram<u64>,
    win_counts: [u64; 3],
    windows: Vec<LatencyWindow>,
    lag: Histogram<u64>,
    camera: Histogram<u64>,
    last_live: (Option<f64>, Option<f64>),
    series: Option<Vec<(f64, f64, Option<f64>)>>,
}

/// What one delivered frame was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It has detections.
    Processed,
    /// It was past the deadline.
    Skipped,
    /// It failed (a stage error or a source error).
    Errored,
}

impl LatencyStats {
    /// Windows of `window`; keeps the per-frame series if `series`.
    pub fn new(window: Duration, series: bool) -> Self {
        LatencyStats {
            window,
            origin: None,
            index: 0,
            win_lat: histogram(),
            win_cam: histogram(),
            win_counts: [0; 3],
            windows: Vec::new(),
            lag: histogram(),
            camera: histogram(),
            last_live: (None, None),
            series: series.then(|| Vec::with_capacity(4096)),
        }
    }

    /// Records one delivered frame: captured at `captured`, delivered at `delivered`, with the
    /// camera lag of its read if known.
    pub fn record(&mut self, captured: Instant, delivered: Instant, outcome: Outcome, lag: Option<Duration>) {
        let origin = *self.origin.get_or_insert(captured);
        let t = captured.saturating_duration_since(origin);
        let index = (t.as_nanos() / self.window.as_nanos().max(1)) as u64;
        while index > self.index {
            self.close_window(true);
        }
        let latency = delivered.saturating_duration_since(captured);
        match outcome {
            Outcome::Processed => {
                self.win_counts[0] += 1;
                let ns = (latency.as_nanos() as u64).max(1);
                self.win_lat.saturating_record(ns);
                let cam = lag.map(|l| l + latency);
                if let (Some(l), Some(c)) = (lag, cam) {
                    self.lag.saturating_record((l.as_nanos() as u64).max(1));
                    self.camera.saturating_record((c.as_nanos() as u64).max(1));
                    self.win_cam.saturating_record((c.as_nanos() as u64).max(1));
                }
                if let Some(s) = self.series.as_mut() {
                    s.push((t.as_secs_f64(), latency.as_secs_f64() * 1e3, cam.map(|c| c.as_secs_f64() * 1e3)));
                }
            }
            Outcome::Skipped => self.win_counts[1] += 1,
            Outcome::Errored => self.win_counts[2] += 1,
        }
    }

    fn close_window(&mut self, complete: bool) {
        if self.win_lat.len() >= 3 {
            self.last_live = (us(&self.win_lat, 0.5).map(|v| v / 1e3), us(&self.win_lat, 0.99).map(|v| v / 1e3));
        }
        let w = self.window.as_secs_f64();
        self.windows.push(LatencyWindow {
            start_s: self.index as f64 * w,
            end_s: (self.index + 1) as f64 * w,
            complete,
            processed: self.win_counts[0],
            skipped: self.win_counts[1],
            errored: self.win_counts[2],
            p50_us: us(&self.win_lat, 0.5),
            p99_us: us(&self.win_lat, 0.99),
            max_us: (!self.win_lat.is_empty()).then(|| self.win_lat.max() as f64 / 1e3),
            camera_p99_us: us(&self.win_cam, 0.99),
        });
        self.win_lat.reset();
        self.win_cam.reset();
        self.win_counts = [0; 3];
        self.index += 1;
    }

    /// Capture → result p50 and p99 (ms) of the current window, or of the last one with enough
    /// frames while the current one has fewer than 3.
    pub fn live_percentiles(&self) -> (Option<f64>, Option<f64>) {
        if self.win_lat.len() >= 3 {
            (us(&self.win_lat, 0.5).map(|v| v / 1e3), us(&self.win_lat, 0.99).map(|v| v / 1e3))
        } else {
            self.last_live
        }
    }

    /// Closes the current window (as incomplete) and returns every window, the camera lag and the
    /// camera latency, and the series.
    #[allow(clippy::type_complexity)]
    pub fn finish(
        mut self,
    ) -> (Vec<LatencyWindow>, Option<Summary>, Option<Summary>, Option<Vec<(f64, f64, Option<f64>)>>) {
        if self.origin.is_some() {
            self.close_window(false);
        }
        (self.windows, Summary::of(&self.lag), Summary::of(&self.camera), self.series)
    }

    /// Windows closed so far.
    pub fn windows(&self) -> &[LatencyWindow] {
        &self.windows
    }
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// The source ended (a file, or `max_frames`).
    SourceEnded,
    /// The run's duration passed.
    Duration,
    /// SIGINT or SIGTERM.
    Signal,
    /// [`StopHandle::stop`](crate::node::StopHandle::stop).
    Stopped,
    /// A live source died (and was not, or could not be, reconnected).
    SourceDied,
    /// A read did not return within the stall timeout.
    Stalled,
}

impl EndReason {
    /// Whether the run ended because something failed.
    pub fn is_failure(&self) -> bool {
        matches!(self, EndReason::SourceDied | EndReason::Stalled)
    }

    /// The kebab-case name, as in the report.
    pub fn name(&self) -> &'static str {
        match self {
            EndReason::SourceEnded => "source-ended",
            EndReason::Duration => "duration",
            EndReason::Signal => "signal",
            EndReason::Stopped => "stopped",
            EndReason::SourceDied => "source-died",
            EndReason::Stalled => "stalled",
        }
    }
}

/// The source as the report describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceMeta {
    /// The source as given.
    pub uri: String,
    /// `camera`, `stream`, `gstreamer` or `file`.
    pub kind: String,
    /// Frame size.
    pub width: usize,
    /// Frame size.
    pub height: usize,
    /// The rate the source announced, if any.
    pub fps: Option<f64>,
    /// The media backend and what it reads (`native (http-mjpeg, mjpeg)`, `opencv (GSTREAMER)`).
    pub backend: String,
    /// Whether a file was read at its frame rate.
    pub realtime: bool,
}

impl SourceMeta {
    /// From what the source announced.
    pub fn new(spec: &SourceSpec, info: &VideoInfo, realtime: bool) -> Self {
        SourceMeta {
            uri: info.source.clone(),
            kind: match spec {
                SourceSpec::Camera(_) => "camera",
                SourceSpec::Url(_) => "stream",
                SourceSpec::GStreamer(_) => "gstreamer",
                SourceSpec::File(_) => "file",
            }
            .into(),
            width: info.width,
            height: info.height,
            fps: info.fps,
            backend: info.backend.clone(),
            realtime,
        }
    }
}

/// Per stream (source) of a node: what came in and what came out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    /// The stream id: 0 for `source.uri`, `i + 1` for `source.extra[i]`.
    pub id: u32,
    /// The source.
    pub source: SourceMeta,
    /// How this stream ended (the node's stop, its source ending, or its source failing).
    pub end: EndReason,
    /// What failed, if its source failed.
    pub error: Option<String>,
    /// Reads offered at its entrance.
    pub captured: u64,
    /// Numbered and sent through the pipeline.
    pub admitted: u64,
    /// Dropped at its entrance by the admission policy.
    pub dropped: u64,
    /// Results delivered for it.
    pub frames_out: u64,
    /// Of those, processed (detections delivered).
    pub processed: u64,
    /// Of those, skipped for the deadline.
    pub skipped: u64,
    /// Of those, failed (stage errors and its source's errors).
    pub errored: u64,
    /// Delivered out of this stream's order (always 0).
    pub reordered: u64,
    /// Capture → result latency of its processed frames, µs.
    pub latency_us: Summary,
    /// Successful reconnections of its source.
    pub reconnects: u64,
}

/// Per stream: what the node counted on delivery. Fixed size; recording allocates nothing.
pub(crate) struct StreamTally {
    pub(crate) latency: Histogram<u64>,
    pub(crate) processed: u64,
    pub(crate) skipped: u64,
    pub(crate) errored: u64,
}

impl StreamTally {
    pub(crate) fn new() -> Self {
        StreamTally { latency: histogram(), processed: 0, skipped: 0, errored: 0 }
    }

    pub(crate) fn record(&mut self, latency: Duration, outcome: Outcome) {
        match outcome {
            Outcome::Processed => {
                self.processed += 1;
                self.latency.saturating_record((latency.as_nanos() as u64).max(1));
            }
            Outcome::Skipped => self.skipped += 1,
            Outcome::Errored => self.errored += 1,
        }
    }
}

/// What the MJPEG view did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewReport {
    /// The page's URL.
    pub url: String,
    /// Frames offered to it.
    pub published: u64,
    /// JPEGs made.
    pub encoded: u64,
    /// JPEGs written to clients, summed over clients.
    pub served: u64,
    /// Frames skipped by its rate cap or replaced before encoding.
    pub skipped: u64,
}

/// The camera report (`--json`; schema in `docs/formats.md`, "Camera report").
///
/// Counting rules: `captured = admitted + dropped` and `admitted = processed + skipped + errored`
/// (after the run; a failed read counts as a captured frame that errored, `source_errors` says how
/// many).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraReport {
    /// The source (stream 0's, when there are several).
    pub source: SourceMeta,
    /// Per stream, by id (one entry per source; the totals below are over every stream).
    #[serde(default)]
    pub streams: Vec<StreamReport>,
    /// The model file.
    pub model: String,
    /// The engine used.
    pub engine: String,
    /// The admission policy.
    pub admission: String,
    /// The deadline, if any.
    pub deadline_ms: Option<u64>,
    /// The cap on frames in flight.
    pub max_in_flight: usize,
    /// Why the run ended.
    pub end: EndReason,
    /// What failed, if the run ended on a failure (or the pipeline reported one).
    pub error: Option<String>,
    /// Seconds from start to the end of the drain.
    pub duration_s: f64,
    /// Reads offered at the entrance (frames, and failed reads).
    pub captured: u64,
    /// Numbered and sent through the pipeline.
    pub admitted: u64,
    /// Dropped at the entrance by the admission policy.
    pub dropped: u64,
    /// Skipped for the deadline.
    pub skipped: u64,
    /// Failed (stage errors and source errors).
    pub errored: u64,
    /// Processed: detections delivered.
    pub processed: u64,
    /// Of `errored`, failed reads.
    pub source_errors: u64,
    /// Admitted but not delivered (0 unless shutdown gave up on a stage).
    pub lost: u64,
    /// Delivered out of order (always 0).
    pub reordered: u64,
    /// Frames captured per second.
    pub camera_fps: f64,
    /// Frames processed per second.
    pub processed_fps: f64,
    /// Capture → result latency of processed frames, µs.
    pub latency_us: Summary,
    /// Per window of `window_s` seconds (by capture time), in order.
    pub latency_windows: Vec<LatencyWindow>,
    /// The window length.
    pub window_s: f64,
    /// How far reads lagged behind the camera's clock, µs (`null`: the source has no timestamps).
    pub camera_lag_us: Option<Summary>,
    /// Camera clock → result: lag plus latency, µs.
    pub camera_latency_us: Option<Summary>,
    /// Successful reconnections.
    pub reconnects: u64,
    /// Reconnection attempts.
    pub reconnect_attempts: u64,
    /// The MJPEG view, if served.
    pub view: Option<ViewReport>,
    /// Per stage, the source (`decode`) first, as in the bench report.
    pub stages: serde_json::Value,
    /// The runtime's notices.
    pub notices: Vec<String>,
    /// Per processed frame: `[seconds after the first capture, latency ms, camera latency ms or null]`
    /// (only with `run.series` / `--series`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<(f64, f64, Option<f64>)>>,
}

impl CameraReport {
    /// Reads a report written by `--json`.
    pub fn from_file(path: &Path) -> Result<Self, AppError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AppError::Config { name: path.display().to_string(), reason: e.to_string() })?;
        serde_json::from_str(&text).map_err(|e| AppError::Config {
            name: path.display().to_string(),
            reason: format!("not a camera report: {e}"),
        })
    }

    /// The p99 of the first and of the last complete window, µs (camera latency when every window
    /// has it, else capture latency).
    pub fn first_last_p99(&self) -> Option<(f64, f64)> {
        let full: Vec<&LatencyWindow> = self.latency_windows.iter().filter(|w| w.complete).collect();
        let camera = full.iter().all(|w| w.camera_p99_us.is_some());
        let p = |w: &LatencyWindow| if camera { w.camera_p99_us } else { w.p99_us };
        Some((p(full.first()?)?, p(full.last()?)?))
    }

    /// The terminal summary.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let ms = |v: f64| v / 1e3;
        let _ = writeln!(
            s,
            "camera {} ({}x{}{}, {}), model {}, engine {}, admission {}{}",
            self.source.uri,
            self.source.width,
            self.source.height,
            self.source.fps.map_or(String::new(), |f| format!(" @ {f:.1} fps")),
            self.source.backend,
            self.model,
            self.engine,
            self.admission,
            self.deadline_ms.map_or(String::new(), |d| format!(", deadline {d} ms"))
        );
        let _ = writeln!(
            s,
            "ended: {}{} after {:.1} s",
            self.end.name(),
            self.error.as_deref().map_or(String::new(), |e| format!(" ({e})")),
            self.duration_s
        );
        let _ = writeln!(
            s,
            "frames: captured {} = admitted {} + dropped {}; admitted = processed {} + skipped {} + errored {} (source errors {}); lost {}",
            self.captured, self.admitted, self.dropped, self.processed, self.skipped, self.errored, self.source_errors, self.lost
        );
        let _ = writeln!(s, "rates: camera {:.1} fps, processed {:.2} fps", self.camera_fps, self.processed_fps);
        if self.streams.len() > 1 {
            for t in &self.streams {
                let _ = writeln!(
                    s,
                    "stream {} {} ({}x{}): {}{}; captured {} dropped {} out {} (processed {} skipped {} errored {}), reordered {}, latency ms p50 {:.1} p99 {:.1}",
                    t.id,
                    t.source.uri,
                    t.source.width,
                    t.source.height,
                    t.end.name(),
                    t.error.as_deref().map_or(String::new(), |e| format!(" ({e})")),
                    t.captured,
                    t.dropped,
                    t.frames_out,
                    t.processed,
                    t.skipped,
                    t.errored,
                    t.reordered,
                    ms(t.latency_us.p50),
                    ms(t.latency_us.p99)
                );
            }
        }
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "latency capture -> result ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max)
        );
        if let (Some(lag), Some(c)) = (&self.camera_lag_us, &self.camera_latency_us) {
            let _ = writeln!(
                s,
                "latency camera clock -> result ms: p50 {:.1}  p99 {:.1}  max {:.1} (camera lag p99 {:.1})",
                ms(c.p50),
                ms(c.p99),
                ms(c.max),
                ms(lag.p99)
            );
        }
        let windows: Vec<String> = self
            .latency_windows
            .iter()
            .map(|w| {
                let v = w.camera_p99_us.or(w.p99_us).map_or("-".into(), |v| format!("{:.0}", ms(v)));
                if w.complete {
                    v
                } else {
                    format!("({v})")
                }
            })
            .collect();
        let _ = writeln!(s, "p99 per {:.0} s window, ms: {}", self.window_s, windows.join(" "));
        if self.reconnect_attempts > 0 {
            let _ = writeln!(s, "reconnects: {} of {} attempts", self.reconnects, self.reconnect_attempts);
        }
        if let Some(v) = &self.view {
            let _ = writeln!(s, "view {}: {} JPEGs, {} served", v.url, v.encoded, v.served);
        }
        for n in &self.notices {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

/// Registers DejaVu Sans as plotters' `sans-serif` (as the bench plot does; registering twice is
/// harmless).
fn register_font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        for p in crate::plot::FONT_CANDIDATES {
            if let Ok(bytes) = std::fs::read(p) {
                // The font lives for the whole process, as plotters requires.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                return plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
                    .map_err(|_| format!("{p} is not a usable font"));
            }
        }
        Err(format!("no font found (looked in {:?}); install fonts-dejavu-core", crate::plot::FONT_CANDIDATES))
    })
    .clone()
}

const RUN_COLORS: [plotters::style::RGBColor; 4] = [
    plotters::style::RGBColor(31, 119, 180),
    plotters::style::RGBColor(214, 39, 40),
    plotters::style::RGBColor(44, 160, 44),
    plotters::style::RGBColor(148, 103, 189),
];

/// Draws latency over time for each run into one PNG (1400×700): camera clock → result where the
/// source has timestamps (solid), capture → result (thin), log scale.
pub fn plot_latency(runs: &[(String, CameraReport)], path: &Path) -> Result<(), AppError> {
    let err = |reason: String| AppError::Output { path: path.to_path_buf(), reason };
    if runs.iter().all(|(_, r)| r.series.as_ref().is_none_or(|s| s.is_empty())) {
        return Err(err("the reports have no per-frame series (run with --series)".into()));
    }
    register_font().map_err(err)?;
    draw_latency(runs, path).map_err(|e| err(e.to_string()))
}

fn draw_latency(runs: &[(String, CameraReport)], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let first = &runs[0].1;
    let source = if first.source.kind == "file" {
        Path::new(&first.source.uri).file_name().map_or(first.source.uri.clone(), |f| f.to_string_lossy().into_owned())
    } else {
        first.source.uri.clone()
    };
    let title = format!(
        "latency over time: {source} ({}x{}{}), {}",
        first.source.width,
        first.source.height,
        first.source.fps.map_or(String::new(), |f| format!(" @ {f:.0} fps")),
        Path::new(&first.model).file_name().map_or(first.model.clone(), |f| f.to_string_lossy().into_owned()),
    );
    let root = root.titled(&title, ("sans-serif", 22))?;
    let points = |r: &CameraReport| r.series.clone().unwrap_or_default();
    let t_max = runs.iter().flat_map(|(_, r)| points(r)).map(|p| p.0).fold(1.0, f64::max) * 1.02;
    let all_ms = || runs.iter().flat_map(|(_, r)| points(r)).flat_map(|p| [Some(p.1), p.2]).flatten();
    let y_max = all_ms().fold(1.0, f64::max) * 1.6;
    let y_min = all_ms().fold(f64::INFINITY, f64::min).clamp(1.0, 1e9) * 0.6;
    let mut chart = ChartBuilder::on(&root).margin(16).x_label_area_size(44).y_label_area_size(80).build_cartesian_2d(
        0.0..t_max,
        (y_min..y_max).log_scale().with_key_points(
            [10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5]
                .into_iter()
                .filter(|v| (y_min..=y_max).contains(v))
                .collect::<Vec<f64>>(),
        ),
    )?;
    chart
        .configure_mesh()
        .x_desc("capture time (s after the first frame)")
        .y_desc("latency (ms, log scale)")
        .y_label_formatter(&|v| if *v >= 1000.0 { format!("{:.0} s", v / 1000.0) } else { format!("{v:.0} ms") })
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (label, r)) in runs.iter().enumerate() {
        let color = RUN_COLORS[i % RUN_COLORS.len()];
        let pts = points(r);
        let has_camera = pts.iter().any(|p| p.2.is_some());
        let windows = |camera: bool| -> String {
            let full: Vec<&LatencyWindow> = r.latency_windows.iter().filter(|w| w.complete).collect();
            let p = |w: &LatencyWindow| if camera { w.camera_p99_us } else { w.p99_us };
            match (full.first().and_then(|w| p(w)), full.last().and_then(|w| p(w))) {
                (Some(a), Some(b)) => {
                    format!("p99 first {:.0} s window {:.2} s, last {:.2} s", r.window_s, a / 1e6, b / 1e6)
                }
                _ => String::new(),
            }
        };
        if has_camera {
            chart
                .draw_series(LineSeries::new(pts.iter().filter_map(|p| p.2.map(|c| (p.0, c))), color.stroke_width(3)))?
                .label(format!(
                    "{label}: camera clock -> result ({}; dropped {} of {})",
                    windows(true),
                    r.dropped,
                    r.captured
                ))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        }
        let thin = color.mix(0.55);
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), thin.stroke_width(1)))?
            .label(format!(
                "{label}: read -> result{}",
                if has_camera {
                    String::new()
                } else {
                    format!(" ({}; dropped {} of {})", windows(false), r.dropped, r.captured)
                }
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], thin.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_by_capture_time_and_skip_nothing() {
        let mut s = LatencyStats::new(Duration::from_secs(10), true);
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        s.record(at(0.0), at(0.3), Outcome::Processed, Some(Duration::ZERO));
        s.record(at(5.0), at(5.5), Outcome::Processed, Some(Duration::from_millis(100)));
        s.record(at(12.0), at(12.1), Outcome::Skipped, None);
        // Nothing captured in [20, 30).
        s.record(at(31.0), at(32.0), Outcome::Processed, None);
        let (w, lag, cam, series) = s.finish();
        assert_eq!(w.len(), 4);
        assert_eq!((w[0].processed, w[1].skipped, w[2].processed, w[3].processed), (2, 1, 0, 1));
        assert!(w[..3].iter().all(|w| w.complete) && !w[3].complete);
        assert!((w[0].p99_us.unwrap() - 500_000.0).abs() < 1_000.0, "{w:?}");
        assert_eq!(w[2].p99_us, None);
        assert!((w[0].camera_p99_us.unwrap() - 600_000.0).abs() < 1_000.0, "{w:?}");
        assert_eq!(w[3].camera_p99_us, None);
        assert_eq!(lag.unwrap().count, 2);
        assert_eq!(cam.unwrap().count, 2);
        assert_eq!(series.unwrap().len(), 3);
    }

    #[test]
    fn the_lag_map_follows_buffers() {
        let mut m = LagMap::default();
        m.put(1, Some(Duration::from_millis(5)));
        m.put(2, None);
        m.put(1, Some(Duration::from_millis(7)));
        assert_eq!((m.get(1), m.get(2), m.get(3)), (Some(Duration::from_millis(7)), None, None));
    }
}
