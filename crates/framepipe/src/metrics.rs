//! Metrics: HDR histograms of service time, queue wait and end-to-end latency, counters, and the
//! [`Report`] built from a snapshot of them.
//!
//! Each stage replica records into its own histograms behind its own mutex, which only a snapshot
//! ever contends for; histograms have a fixed range (1 ns to 60 s, 3 significant digits) and
//! saturate instead of resizing, so recording never allocates.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::admission::{Admission, EntranceCounters};
use crate::link::WaitStrategy;

const HIST_MAX_NS: u64 = 60_000_000_000;

pub(crate) fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds");
    h.auto(false);
    h
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one replica of one stage recorded.
pub(crate) struct ReplicaStats {
    pub(crate) service: Histogram<u64>,
    pub(crate) wait: Histogram<u64>,
    pub(crate) processed: u64,
    pub(crate) errored: u64,
    pub(crate) skipped: u64,
    pub(crate) panicked: u64,
    pub(crate) aborted: u64,
    pub(crate) busy_ns: u64,
}

impl ReplicaStats {
    fn new() -> Self {
        ReplicaStats {
            service: histogram(),
            wait: histogram(),
            processed: 0,
            errored: 0,
            skipped: 0,
            panicked: 0,
            aborted: 0,
            busy_ns: 0,
        }
    }
}

pub(crate) struct StageMetrics {
    pub(crate) name: Arc<str>,
    pub(crate) is_source: bool,
    pub(crate) branch: Option<String>,
    pub(crate) pins: Vec<Vec<usize>>,
    pub(crate) replicas: Vec<Mutex<ReplicaStats>>,
}

impl StageMetrics {
    pub(crate) fn new(
        name: Arc<str>,
        replicas: usize,
        pins: Vec<Vec<usize>>,
        is_source: bool,
        branch: Option<String>,
    ) -> Self {
        StageMetrics {
            name,
            is_source,
            branch,
            pins,
            replicas: (0..replicas).map(|_| Mutex::new(ReplicaStats::new())).collect(),
        }
    }

    pub(crate) fn replica(&self, i: usize) -> MutexGuard<'_, ReplicaStats> {
        lock(&self.replicas[i])
    }
}

/// What the output side recorded.
pub(crate) struct OutputStats {
    pub(crate) e2e: Histogram<u64>,
    pub(crate) frames_out: u64,
    pub(crate) processed: u64,
    pub(crate) errored: u64,
    pub(crate) skipped: u64,
    pub(crate) reordered: u64,
    pub(crate) last_seq: Option<u64>,
    pub(crate) first_capture: Option<Instant>,
    pub(crate) last_out: Option<Instant>,
    pub(crate) streams: Vec<StreamStats>,
}

/// Per-stream counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamStats {
    /// The stream id.
    pub id: u32,
    /// Frames offered at this stream's entrance.
    pub frames_in: u64,
    /// Frames dropped at this stream's entrance.
    pub dropped: u64,
    /// Frames of this stream numbered and admitted.
    pub admitted: u64,
    /// Outputs delivered for this stream (processed or not).
    pub frames_out: u64,
    /// Outputs delivered out of this stream's order (always 0).
    pub reordered: u64,
    #[serde(skip)]
    pub(crate) last_seq: Option<u64>,
}

/// A link as built: its ends, capacity and the wait strategy it got.
#[derive(Clone, Debug, Serialize)]
pub struct LinkInfo {
    /// The sending side ("entrance" for the admission queue).
    pub from: String,
    /// The receiving side ("output" for the user's end).
    pub to: String,
    /// Capacity in frames.
    pub capacity: usize,
    /// The wait strategy the link got (which may differ from the one asked for; see the notices).
    pub wait: WaitStrategy,
    /// Whether it is a lock-free single-producer/single-consumer ring.
    pub ring: bool,
    /// Whether a reorder step sits at its receiving end.
    pub reorder: bool,
}

/// What the join records for one branch of a fan-out.
pub(crate) struct BranchMetrics {
    pub(crate) name: String,
    pub(crate) stages: Vec<String>,
    pub(crate) last_stage: usize,
    pub(crate) latency: Mutex<Histogram<u64>>,
    pub(crate) errored: std::sync::atomic::AtomicU64,
}

impl BranchMetrics {
    pub(crate) fn new(name: String, stages: Vec<String>, last_stage: usize) -> Self {
        BranchMetrics { name, stages, last_stage, latency: Mutex::new(histogram()), errored: Default::default() }
    }
}

pub(crate) struct Metrics {
    pub(crate) started: Instant,
    pub(crate) flow: crate::flow::Flow,
    pub(crate) release: &'static str,
    pub(crate) admission: Admission,
    pub(crate) max_in_flight: usize,
    pub(crate) sources: Vec<StageMetrics>,
    pub(crate) stages: Vec<StageMetrics>,
    pub(crate) branches: Vec<BranchMetrics>,
    pub(crate) output: Mutex<OutputStats>,
    pub(crate) notices: Mutex<Vec<String>>,
    pub(crate) links: Vec<LinkInfo>,
}

impl Metrics {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        admission: Admission,
        max_in_flight: usize,
        sources: Vec<StageMetrics>,
        stages: Vec<StageMetrics>,
        branches: Vec<BranchMetrics>,
        links: Vec<LinkInfo>,
        notices: Vec<String>,
        release: &'static str,
        flow: crate::flow::Flow,
    ) -> Self {
        Metrics {
            started: Instant::now(),
            flow,
            release,
            admission,
            max_in_flight,
            sources,
            stages,
            branches,
            output: Mutex::new(OutputStats {
                e2e: histogram(),
                frames_out: 0,
                processed: 0,
                errored: 0,
                skipped: 0,
                reordered: 0,
                last_seq: None,
                first_capture: None,
                last_out: None,
                streams: Vec::new(),
            }),
            notices: Mutex::new(notices),
            links,
        }
    }

    pub(crate) fn notice(&self, msg: String) {
        lock(&self.notices).push(msg);
    }

    pub(crate) fn output(&self) -> MutexGuard<'_, OutputStats> {
        lock(&self.output)
    }

    pub(crate) fn report(&self, entrance: &[Arc<EntranceCounters>]) -> Report {
        let out = lock(&self.output);
        let mut stages: Vec<StageReport> = Vec::new();
        for s in self.sources.iter().chain(self.stages.iter()) {
            let mut service = histogram();
            let mut wait = histogram();
            let (mut processed, mut errored, mut skipped, mut panicked, mut aborted, mut busy) = (0, 0, 0, 0, 0, 0);
            for r in &s.replicas {
                let r = lock(r);
                let _ = service.add(&r.service);
                let _ = wait.add(&r.wait);
                processed += r.processed;
                errored += r.errored;
                skipped += r.skipped;
                panicked += r.panicked;
                aborted += r.aborted;
                busy += r.busy_ns;
            }
            stages.push(StageReport {
                name: s.name.to_string(),
                source: s.is_source,
                branch: s.branch.clone(),
                replicas: s.replicas.len(),
                pins: s.pins.clone(),
                service_us: Percentiles::of(&service),
                wait_us: Percentiles::of(&wait),
                mean_service_us: if service.is_empty() { 0.0 } else { service.mean() / 1e3 },
                processed,
                errored,
                skipped,
                panicked,
                aborted,
                busy_s: busy as f64 / 1e9,
            });
        }
        let wall = match (out.first_capture, out.last_out) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        let throughput_fps = if wall.is_zero() { 0.0 } else { out.processed as f64 / wall.as_secs_f64() };
        let bound_fps = stages
            .iter()
            .filter(|s| s.mean_service_us > 0.0)
            .map(|s| s.replicas as f64 * 1e6 / s.mean_service_us)
            .fold(f64::INFINITY, f64::min);
        let bound_fps = if bound_fps.is_finite() { bound_fps } else { 0.0 };
        let latency_us = Percentiles::of(&out.e2e);
        let stage_sum_p50_us: f64 = stages.iter().filter(|s| !s.source).map(|s| s.service_us.p50).sum();
        let sum = |f: fn(&EntranceCounters) -> &std::sync::atomic::AtomicU64| -> u64 {
            entrance.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
        };
        let frames_in = sum(|c| &c.offered);
        let admitted = sum(|c| &c.admitted);
        let dropped = sum(|c| &c.dropped);
        let mut streams: Vec<StreamStats> = entrance
            .iter()
            .enumerate()
            .map(|(i, c)| StreamStats {
                id: i as u32,
                frames_in: c.offered.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
                admitted: c.admitted.load(Ordering::Relaxed),
                ..Default::default()
            })
            .collect();
        for o in &out.streams {
            if let Some(s) = streams.iter_mut().find(|s| s.id == o.id) {
                s.frames_out = o.frames_out;
                s.reordered = o.reordered;
            }
        }
        let branches = self
            .branches
            .iter()
            .map(|b| BranchReport {
                name: b.name.clone(),
                stages: b.stages.clone(),
                latency_us: Percentiles::of(&lock(&b.latency)),
                errored: b.errored.load(Ordering::Relaxed),
            })
            .collect();
        Report {
            admission: self.admission,
            release: self.release.to_string(),
            max_in_flight: self.max_in_flight,
            frames_in,
            admitted,
            dropped,
            frames_out: out.frames_out,
            processed: out.processed,
            skipped: out.skipped,
            errored: out.errored,
            source_errors: sum(|c| &c.source_errors),
            lost: admitted.saturating_sub(out.frames_out),
            reordered: out.reordered,
            wall_s: wall.as_secs_f64(),
            throughput_fps,
            bound_fps,
            efficiency: if bound_fps > 0.0 { throughput_fps / bound_fps } else { 0.0 },
            latency_us,
            stage_sum_p50_us,
            overhead_p50_us: latency_us.p50 - stage_sum_p50_us,
            hops: self.links.len(),
            hop_baseline_us: None,
            stages,
            links: self.links.clone(),
            streams,
            branches,
            notices: lock(&self.notices).clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// Percentiles of a histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
    /// Number of samples.
    pub count: u64,
}

impl Percentiles {
    /// Percentiles of a histogram of nanoseconds, in microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1e3;
        Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 / 1e3,
            count: h.len(),
        }
    }
}

/// One stage in a [`Report`].
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    /// The stage's name.
    pub name: String,
    /// The fan-out branch the stage belongs to, if any.
    pub branch: Option<String>,
    /// Whether this is the pipeline's source (its time is not part of the end-to-end latency, which
    /// starts at capture).
    pub source: bool,
    /// Number of replicas.
    pub replicas: usize,
    /// The cores each replica was pinned to (empty: not pinned).
    pub pins: Vec<Vec<usize>>,
    /// Service time: from taking a frame to handing on the result.
    pub service_us: Percentiles,
    /// Queue wait: from the previous stage's exit (or capture) to this stage's entry.
    pub wait_us: Percentiles,
    /// Mean service time.
    pub mean_service_us: f64,
    /// Frames processed successfully.
    pub processed: u64,
    /// Frames for which the stage returned an error.
    pub errored: u64,
    /// Frames skipped at this stage for being past the deadline.
    pub skipped: u64,
    /// Frames on which the stage panicked.
    pub panicked: u64,
    /// Frames passed through unprocessed because this stage had panicked before.
    pub aborted: u64,
    /// Total time the stage's replicas spent processing.
    pub busy_s: f64,
}

/// One branch of a fan-out in a [`Report`].
#[derive(Clone, Debug, Serialize)]
pub struct BranchReport {
    /// The branch's name.
    pub name: String,
    /// Its stages, in order.
    pub stages: Vec<String>,
    /// Capture → the frame left the branch's last stage, for frames the branch processed.
    pub latency_us: Percentiles,
    /// Frames for which the branch produced an error (a stage error, skip or panic in the branch).
    pub errored: u64,
}

/// A snapshot of a pipeline's counters and latencies.
///
/// Counting rules: `frames_in` frames were offered at the entrance, `dropped` of them were dropped
/// there by the admission policy and `admitted` were numbered, so `frames_in = admitted + dropped`
/// (once no push is half-way). Of the admitted frames, `frames_out` have been delivered, each either
/// `processed`, `skipped` or `errored`, and `lost = admitted - frames_out` are still inside (0 after a
/// close).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The admission policy.
    pub admission: Admission,
    /// How the pipeline's own source releases frames: `just-in-time`, `free` (as fast as admission
    /// accepts), `paced` (a fixed rate) or `input` (frames pushed by the caller).
    pub release: String,
    /// The cap on live frames.
    pub max_in_flight: usize,
    /// Frames offered at the entrance.
    pub frames_in: u64,
    /// Frames numbered and admitted.
    pub admitted: u64,
    /// Frames dropped at the entrance.
    pub dropped: u64,
    /// Outputs delivered (processed, skipped or errored).
    pub frames_out: u64,
    /// Outputs with a payload.
    pub processed: u64,
    /// Outputs skipped for the deadline.
    pub skipped: u64,
    /// Outputs that carry an error (stage error, panic, abort or source error).
    pub errored: u64,
    /// Of `errored`, those the source reported.
    pub source_errors: u64,
    /// Admitted frames not delivered (yet).
    pub lost: u64,
    /// Outputs delivered out of sequence order (the runtime guarantees 0).
    pub reordered: u64,
    /// From the first delivered frame's capture to the last delivery.
    pub wall_s: f64,
    /// Processed frames per second over `wall_s`.
    pub throughput_fps: f64,
    /// The pipeline's bound: the minimum over stages of replicas / mean service time.
    pub bound_fps: f64,
    /// `throughput_fps / bound_fps`.
    pub efficiency: f64,
    /// End-to-end latency, capture to delivery, of processed frames.
    pub latency_us: Percentiles,
    /// Sum of the processing stages' median service times.
    pub stage_sum_p50_us: f64,
    /// `latency_us.p50 - stage_sum_p50_us`: what queues, hops and the runtime add.
    pub overhead_p50_us: f64,
    /// Queue hops between capture and delivery.
    pub hops: usize,
    /// The median of one bare hop with the same link kind, if measured ([`measure_hop`](crate::measure_hop)).
    pub hop_baseline_us: Option<f64>,
    /// Per stage, the source first if the pipeline runs one.
    pub stages: Vec<StageReport>,
    /// The links as built.
    pub links: Vec<LinkInfo>,
    /// Per-stream counters.
    pub streams: Vec<StreamStats>,
    /// Per fan-out branch: its latency (capture → the branch's last stage) and errors.
    pub branches: Vec<BranchReport>,
    /// What the runtime could not do as asked (pinning, real-time priority, spinning), and what it did.
    pub notices: Vec<String>,
    /// Seconds since the pipeline was built.
    pub uptime_s: f64,
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// The slowest stage (largest mean service time per replica), if any frame was processed.
    pub fn slowest_stage(&self) -> Option<&StageReport> {
        self.stages
            .iter()
            .filter(|s| s.mean_service_us > 0.0)
            .max_by(|a, b| (a.mean_service_us / a.replicas as f64).total_cmp(&(b.mean_service_us / b.replicas as f64)))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "frames: in {}  admitted {}  out {}  processed {}  dropped {}  skipped {}  errored {}  lost {}  reordered {}",
            self.frames_in,
            self.admitted,
            self.frames_out,
            self.processed,
            self.dropped,
            self.skipped,
            self.errored,
            self.lost,
            self.reordered
        )?;
        writeln!(
            f,
            "throughput {:.1} fps  bound {:.1} fps  efficiency {:.3}",
            self.throughput_fps, self.bound_fps, self.efficiency
        )?;
        let l = &self.latency_us;
        writeln!(
            f,
            "latency (capture -> output) ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50 / 1e3,
            l.p90 / 1e3,
            l.p99 / 1e3,
            l.p999 / 1e3,
            l.max / 1e3
        )?;
        writeln!(
            f,
            "stage sum p50 {:.3} ms  overhead p50 {:.1} us over {} hops{}",
            self.stage_sum_p50_us / 1e3,
            self.overhead_p50_us,
            self.hops,
            match self.hop_baseline_us {
                Some(h) => format!(" (bare hop p50 {h:.1} us)"),
                None => String::new(),
            }
        )?;
        writeln!(
            f,
            "{:<14} {:>3}  {:>10} {:>10}  {:>10} {:>10}  {:>8} {:>6} {:>6}",
            "stage", "x", "svc p50 ms", "svc p99 ms", "wait p50", "wait p99", "done", "err", "skip"
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "{:<14} {:>3}  {:>10.3} {:>10.3}  {:>10.3} {:>10.3}  {:>8} {:>6} {:>6}",
                if s.source { format!("{} (src)", s.name) } else { s.name.clone() },
                s.replicas,
                s.service_us.p50 / 1e3,
                s.service_us.p99 / 1e3,
                s.wait_us.p50 / 1e3,
                s.wait_us.p99 / 1e3,
                s.processed,
                s.errored + s.panicked + s.aborted,
                s.skipped
            )?;
        }
        for n in &self.notices {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}
