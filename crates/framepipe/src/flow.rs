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
//!
//! Several sources (one per stream) share one release schedule: the release times are computed for
//! the pipeline as a whole, and each release goes to the next waiting source in round-robin order
//! after the one that had the last, so that no stream takes another's slots (fairness as in the
//! entrance's round-robin) and no source reads a frame that would then wait for its turn. A source
//! that is still reading, or has ended, is not waiting and is passed over: a slow or finished
//! stream does not hold the others back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
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
    /// The release schedule shared by the just-in-time sources.
    gate: Mutex<Gate>,
    turn: Condvar,
}

/// Whose turn it is, and the schedule the turns follow.
struct Gate {
    release: Release,
    /// Per source: waiting for a release now.
    waiting: Vec<bool>,
    /// Per source: moving average of its read time, ns.
    read_ns: Vec<u64>,
    /// The source that had the last release.
    last: usize,
}

impl Flow {
    /// `stages[k] = (replicas, predecessors, extra hops before k)`; predecessors have lower indices.
    /// `sources` is how many sources are released just in time.
    pub(crate) fn new(stages: Vec<(usize, Vec<usize>, u64)>, sources: usize) -> Self {
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
        let release = Release::new(&flows);
        let sources = sources.max(1);
        Flow {
            epoch: Instant::now(),
            stages: flows,
            preds,
            finished: AtomicU64::new(0),
            gate: Mutex::new(Gate {
                release,
                waiting: vec![false; sources],
                read_ns: vec![0; sources],
                // So that source 0 has the first turn.
                last: sources - 1,
            }),
            turn: Condvar::new(),
        }
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        // The gate's state is a few counters, consistent after any panic.
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Source `me` took `ns` to read a frame.
    pub(crate) fn record_source(&self, me: usize, ns: u64) {
        let mut g = self.gate();
        let old = g.read_ns[me];
        g.read_ns[me] = ewma(old, ns);
    }

    /// A release that brought no frame in (the source ended, or the entrance closed): it is taken
    /// back, so the schedule does not wait for a frame that never comes.
    pub(crate) fn unrelease(&self) {
        let mut g = self.gate();
        g.release.released = g.release.released.saturating_sub(1);
    }

    /// Source `me` waits until it should read its next frame: its turn in the round-robin among the
    /// waiting sources has come and the schedule says the frame can flow through without waiting.
    /// Returns `false` early (without counting a release) once `stop()` turns true.
    pub(crate) fn wait_turn(&self, me: usize, stop: impl Fn() -> bool) -> bool {
        let mut g = self.gate();
        g.waiting[me] = true;
        loop {
            if stop() {
                g.waiting[me] = false;
                return false;
            }
            let n = g.waiting.len();
            let chosen = (1..=n).map(|d| (g.last + d) % n).find(|&i| g.waiting[i]).unwrap_or(me);
            let pause = if chosen == me {
                let now = self.ns(Instant::now());
                let read_ns = g.read_ns[me];
                match g.release.release_at(self, now, read_ns) {
                    Some(at) if at <= now + 50_000 => break,
                    Some(at) => Duration::from_nanos((at - now - 40_000).min(2_000_000)),
                    None => Duration::from_micros(50),
                }
            } else {
                // Woken when the chosen source takes its release; the timeout re-checks `stop`.
                Duration::from_millis(2)
            };
            g = self.turn.wait_timeout(g, pause).unwrap_or_else(PoisonError::into_inner).0;
        }
        g.waiting[me] = false;
        g.last = me;
        g.release.released += 1;
        drop(g);
        self.turn.notify_all();
        true
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
            s.ewma_ns.store(ewma(s.ewma_ns.load(Ordering::Relaxed), ns), Ordering::Relaxed);
        }
    }
}

/// A moving average over about 8 samples (the first sample starts it).
fn ewma(old: u64, ns: u64) -> u64 {
    if old == 0 {
        ns.max(1)
    } else {
        (old - old / 8 + ns / 8).max(1)
    }
}

/// The schedule: decides when the next frame should be read. Its buffers are sized once.
struct Release {
    released: u64,
    free: Vec<u64>,
    travel: Vec<u64>,
}

impl Release {
    fn new(stages: &[StageFlow]) -> Self {
        let max_replicas = stages.iter().map(|s| s.busy_since.len()).max().unwrap_or(1);
        Release { released: 0, free: Vec::with_capacity(max_replicas), travel: Vec::with_capacity(stages.len()) }
    }

    /// When frame `released` should be read by a source whose reads take `read_ns`, in nanoseconds
    /// since the epoch; `None` while warming up and the previous frame is still inside.
    fn release_at(&mut self, flow: &Flow, now: u64, read_ns: u64) -> Option<u64> {
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
                    .unwrap_or(read_ns + HOP_NS);
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
