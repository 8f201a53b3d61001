//! Just-in-time release: the runtime's own source reads a frame only when that frame can flow through
//! every stage without waiting.
//!
//! A free-running source fills every queue: each frame then waits in front of the slowest stage, and
//! end-to-end latency grows to (frames in flight) × (slowest stage's period), far above the sum of the
//! stages, for no gain in throughput (Little's law: the bottleneck sets the rate whatever the queue
//! holds). Capping the frames in flight (oneTBB's tokens) bounds that, but a frame still waits
//! whenever it is released before its slot at the bottleneck is free.
//!
//! Just-in-time release aims each frame at its slot. Every stage publishes, per replica, since when it
//! has been busy, how many frames have entered it, and a moving average of its service time. Before
//! reading frame `n`, the source predicts, for every stage, when a replica will be free for it (after
//! the frames already released ahead of it take theirs), and how long the frame needs to get there
//! (its own read time plus the service times of the stages before). It releases the frame at the
//! latest of those "slot minus travel" times. At steady state frames arrive at each stage as a
//! replica frees up: throughput stays at the bound, and latency stays near the sum of the stages.
//! The prediction uses averages, so jitter costs a little of either; the report shows both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the source assumes one queue hop costs when it predicts arrival times.
const HOP_NS: u64 = 20_000;

pub(crate) struct StageFlow {
    /// Per replica: nanoseconds since the epoch at which its current frame entered, plus one; 0 when
    /// idle.
    busy_since: Vec<AtomicU64>,
    entered: AtomicU64,
    ewma_ns: AtomicU64,
}

/// Live occupancy of the stages, shared by the stage threads and the source.
pub(crate) struct Flow {
    epoch: Instant,
    stages: Vec<StageFlow>,
    /// The stages a frame leaves just before entering each stage (none: it comes from the source;
    /// several: after a join, it waits for the slowest), and the extra hops on the way (a fork or a
    /// join thread).
    preds: Vec<(Vec<usize>, u64)>,
    finished: AtomicU64,
}

impl Flow {
    /// `stages[k] = (replicas, predecessors, extra hops before k)`; predecessors have lower indices.
    pub(crate) fn new(stages: Vec<(usize, Vec<usize>, u64)>) -> Self {
        let mut flows = Vec::with_capacity(stages.len());
        let mut preds = Vec::with_capacity(stages.len());
        for (n, p, extra) in stages {
            flows.push(StageFlow {
                busy_since: (0..n).map(|_| AtomicU64::new(0)).collect(),
                entered: AtomicU64::new(0),
                ewma_ns: AtomicU64::new(0),
            });
            preds.push((p, extra));
        }
        Flow { epoch: Instant::now(), stages: flows, preds, finished: AtomicU64::new(0) }
    }

    /// A frame left the pipeline's last node (it will not occupy any stage again).
    pub(crate) fn finished(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// A frame entered replica `r` of stage `k` at `t`; `busy` says whether the replica will process
    /// it (a tombstone passes straight through).
    pub(crate) fn enter(&self, k: usize, r: usize, t: Instant, busy: bool) {
        let s = &self.stages[k];
        s.entered.fetch_add(1, Ordering::Relaxed);
        if busy {
            s.busy_since[r].store(self.ns(t) + 1, Ordering::Relaxed);
        }
    }

    /// Replica `r` of stage `k` finished a frame; `service` is its service time if it processed it.
    pub(crate) fn exit(&self, k: usize, r: usize, service: Option<u64>) {
        let s = &self.stages[k];
        s.busy_since[r].store(0, Ordering::Relaxed);
        if let Some(ns) = service {
            // A racy read-modify-write between replicas loses at worst one sample of an average.
            let old = s.ewma_ns.load(Ordering::Relaxed);
            let new = if old == 0 { ns.max(1) } else { (old - old / 8 + ns / 8).max(1) };
            s.ewma_ns.store(new, Ordering::Relaxed);
        }
    }
}

/// The source's side: decides when to read the next frame.
pub(crate) struct Release {
    released: u64,
    source_ewma_ns: u64,
    free: Vec<u64>,
    travel: Vec<u64>,
}

impl Release {
    pub(crate) fn new(flow: &Flow) -> Self {
        let max_replicas = flow.stages.iter().map(|s| s.busy_since.len()).max().unwrap_or(1);
        Release {
            released: 0,
            source_ewma_ns: 0,
            free: Vec::with_capacity(max_replicas),
            travel: Vec::with_capacity(flow.stages.len()),
        }
    }

    /// The source took `ns` to read a frame.
    pub(crate) fn record_source(&mut self, ns: u64) {
        let old = self.source_ewma_ns;
        self.source_ewma_ns = if old == 0 { ns.max(1) } else { (old - old / 8 + ns / 8).max(1) };
    }

    /// When frame `released` should be read, in nanoseconds since the epoch; `None` while warming up
    /// and the previous frame is still inside.
    fn release_at(&mut self, flow: &Flow, now: u64) -> Option<u64> {
        if flow.stages.iter().any(|s| s.ewma_ns.load(Ordering::Relaxed) == 0) {
            // Warm-up: one frame at a time until every stage has a service time.
            let done = flow.finished.load(Ordering::Relaxed);
            return (done >= self.released).then_some(now);
        }
        let mut at = 0u64;
        self.travel.clear();
        for (k, s) in flow.stages.iter().enumerate() {
            let t = s.ewma_ns.load(Ordering::Relaxed);
            // How long the frame needs to reach stage k: its read, then the slowest path of stages.
            let (preds, extra) = &flow.preds[k];
            let travel = extra * HOP_NS
                + preds
                    .iter()
                    .map(|&p| self.travel[p] + flow.stages[p].ewma_ns.load(Ordering::Relaxed) + HOP_NS)
                    .max()
                    .unwrap_or(self.source_ewma_ns + HOP_NS);
            self.travel.push(travel);
            self.free.clear();
            for b in &s.busy_since {
                let since = b.load(Ordering::Relaxed);
                self.free.push(if since == 0 { now } else { (since - 1 + t).max(now) });
            }
            // Frames released but not yet at this stage take the earliest slots first.
            let ahead = self.released.saturating_sub(s.entered.load(Ordering::Relaxed));
            for _ in 0..ahead {
                let i = argmin(&self.free);
                self.free[i] = self.free[i].max(now) + t;
            }
            let slot = self.free[argmin(&self.free)];
            at = at.max(slot.saturating_sub(travel));
        }
        Some(at)
    }

    /// Waits until the next frame should be read (or `stop()` turns true), then counts it released.
    pub(crate) fn wait(&mut self, flow: &Flow, stop: impl Fn() -> bool) {
        loop {
            if stop() {
                return;
            }
            let now = flow.ns(Instant::now());
            match self.release_at(flow, now) {
                Some(at) if at <= now + 50_000 => break,
                Some(at) => std::thread::sleep(Duration::from_nanos((at - now - 40_000).min(2_000_000))),
                None => std::thread::sleep(Duration::from_micros(50)),
            }
        }
        self.released += 1;
    }
}

fn argmin(v: &[u64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x < v[best] {
            best = i;
        }
    }
    best
}
