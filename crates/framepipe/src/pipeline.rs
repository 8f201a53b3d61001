//! The running pipeline: its output, its snapshots and its shutdown.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::admission::{EntranceCounters, Gate, Input, Tokens};
use crate::builder::PipelineBuilder;
use crate::envelope::Envelope;
use crate::error::PipelineError;
use crate::metrics::{Metrics, Report, StreamStats};
use crate::reorder::Reorder;
use crate::stage::CancelToken;
use crate::wiring::Fault;

/// How long dropping a pipeline waits for it to drain, before cancelling, and again before leaving
/// threads detached.
pub const DROP_GRACE: Duration = Duration::from_secs(10);

/// A running pipeline: admit frames through [`input`](Pipeline::input) (or its own source), read
/// results in sequence order with [`recv`](Pipeline::recv), then [`close`](Pipeline::close).
///
/// Dropping a pipeline closes it: admission stops, the frames inside drain, and every thread is
/// joined (waiting at most [`DROP_GRACE`] before cancelling, and as long again before detaching).
pub struct Pipeline<In, Out = In> {
    gates: Vec<Arc<Gate<In>>>,
    counters: Vec<Arc<EntranceCounters>>,
    out_rx: Option<Receiver<Envelope<Out>>>,
    reorder: Option<Reorder<Out>>,
    needs_reorder: bool,
    tokens: Tokens,
    metrics: Arc<Metrics>,
    threads: Vec<(String, JoinHandle<()>)>,
    fault: Arc<Mutex<Option<Fault>>>,
    cancel: CancelToken,
    ended: bool,
    shut: bool,
    stage_names: Vec<String>,
    hop_baseline_us: Option<f64>,
}

impl<In: Send + 'static> Pipeline<In, In> {
    /// Starts describing a pipeline whose frames are of type `In`.
    pub fn builder() -> PipelineBuilder<In, In> {
        PipelineBuilder::new()
    }
}

/// Why [`Pipeline::recv_timeout`] returned without an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing came out in time.
    #[error("no output within the timeout")]
    Timeout,
    /// The pipeline is closed and drained: no output will come.
    #[error("the pipeline has ended")]
    Ended,
}

impl<In, Out> Pipeline<In, Out> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        gates: Vec<Arc<Gate<In>>>,
        counters: Vec<Arc<EntranceCounters>>,
        out_rx: Receiver<Envelope<Out>>,
        tokens: Tokens,
        metrics: Arc<Metrics>,
        threads: Vec<(String, JoinHandle<()>)>,
        fault: Arc<Mutex<Option<Fault>>>,
        cancel: CancelToken,
        stage_names: Vec<String>,
        needs_reorder: bool,
    ) -> Self {
        Pipeline {
            gates,
            counters,
            out_rx: Some(out_rx),
            reorder: None,
            needs_reorder,
            tokens,
            metrics,
            threads,
            fault,
            cancel,
            ended: false,
            shut: false,
            stage_names,
            hop_baseline_us: None,
        }
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(crate) fn push_thread(&mut self, name: String, handle: JoinHandle<()>) {
        self.threads.push((name, handle));
    }

    pub(crate) fn source_index(&self, name: &str) -> usize {
        self.metrics.sources.iter().position(|s| &*s.name == name).expect("every source has metrics")
    }

    /// A handle that admits frames into stream 0. Every clone feeds the same entrance.
    pub fn input(&self) -> Input<In> {
        Input { gate: self.gates[0].clone() }
    }

    /// A handle that admits frames into `stream`, if the pipeline has that stream (see
    /// [`PipelineBuilder::streams`]).
    pub fn input_for(&self, stream: u32) -> Option<Input<In>> {
        self.gates.get(stream as usize).map(|g| Input { gate: g.clone() })
    }

    /// How many streams the pipeline admits.
    pub fn streams(&self) -> usize {
        self.gates.len()
    }

    /// The stages' names, in index order (branches one after the other).
    pub fn stage_names(&self) -> &[String] {
        &self.stage_names
    }

    /// The next output in sequence order, waiting for it. `None` once admission is closed and every
    /// admitted frame has come out.
    pub fn recv(&mut self) -> Option<Envelope<Out>> {
        loop {
            if let Some(e) = self.reorder.as_mut().and_then(|r| r.pop_ready()) {
                return Some(self.deliver(e));
            }
            let rx = self.out_rx.as_ref()?;
            match rx.recv() {
                Ok(e) => {
                    if let Some(e) = self.accept(e) {
                        return Some(self.deliver(e));
                    }
                }
                Err(_) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// Like [`recv`](Pipeline::recv), waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Envelope<Out>, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.reorder.as_mut().and_then(|r| r.pop_ready()) {
                return Ok(self.deliver(e));
            }
            let rx = self.out_rx.as_ref().ok_or(RecvError::Ended)?;
            match rx.recv_deadline(deadline) {
                Ok(e) => {
                    if let Some(e) = self.accept(e) {
                        return Ok(self.deliver(e));
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(RecvError::Timeout),
                Err(RecvTimeoutError::Disconnected) => {
                    self.ended = true;
                    return Err(RecvError::Ended);
                }
            }
        }
    }

    /// Iterates over the outputs in sequence order until the pipeline ends.
    pub fn iter(&mut self) -> impl Iterator<Item = Envelope<Out>> + '_ {
        std::iter::from_fn(move || self.recv())
    }

    /// Stops admission; the frames already admitted drain, and [`recv`](Pipeline::recv) returns
    /// `None` after the last of them. Never blocks.
    pub fn finish(&self) {
        self.gates.iter().for_each(|g| g.close());
    }

    /// Stops admission and fires the stages' [`CancelToken`]: stages that watch it return early (their
    /// frames come out as errors, in order); the others finish their frame. Never blocks.
    pub fn cancel(&self) {
        self.finish();
        self.cancel.cancel();
    }

    /// A snapshot of the counters and latencies so far.
    pub fn report(&self) -> Report {
        let mut r = self.metrics.report(&self.counters);
        r.hop_baseline_us = self.hop_baseline_us;
        r
    }

    /// A cloneable handle that takes snapshots from another thread.
    pub fn monitor(&self) -> Monitor {
        Monitor { metrics: self.metrics.clone(), counters: self.counters.clone() }
    }

    /// Records a bare-hop baseline (see [`measure_hop`](crate::measure_hop)) to be shown in reports.
    pub fn set_hop_baseline(&mut self, us: f64) {
        self.hop_baseline_us = Some(us);
    }

    /// Stops admission, drains every frame still inside in sequence order (they are counted, and
    /// dropped here; use [`finish`](Pipeline::finish) and [`recv`](Pipeline::recv) to see them), and
    /// joins every thread. Returns the final report, or the panic that stopped the pipeline.
    pub fn close(mut self) -> Result<Report, PipelineError> {
        self.shutdown(Duration::MAX)
    }

    /// Like [`close`](Pipeline::close), but if the frames have not drained within `grace`, fires the
    /// cancel token; if they still have not after another `grace`, leaves the remaining threads
    /// detached and returns [`PipelineError::Hung`] naming them.
    pub fn close_timeout(mut self, grace: Duration) -> Result<Report, PipelineError> {
        self.shutdown(grace)
    }

    fn accept(&mut self, e: Envelope<Out>) -> Option<Envelope<Out>> {
        if self.reorder.is_none() {
            if !self.needs_reorder {
                return Some(e);
            }
            self.reorder = Some(Reorder::new(self.metrics.max_in_flight));
        }
        self.reorder.as_mut().and_then(|r| r.insert(e))
    }

    fn deliver(&mut self, e: Envelope<Out>) -> Envelope<Out> {
        self.tokens.release();
        self.metrics.flow.finished();
        let now = Instant::now();
        let mut o = self.metrics.output();
        o.frames_out += 1;
        match &e.payload {
            Ok(_) => {
                o.processed += 1;
                let ns = now.saturating_duration_since(e.captured_at).as_nanos() as u64;
                o.e2e.saturating_record(ns.max(1));
            }
            Err(t) if t.is_skip() => o.skipped += 1,
            Err(_) => o.errored += 1,
        }
        match o.last_seq {
            Some(last) if e.seq < last => o.reordered += 1,
            _ => o.last_seq = Some(e.seq),
        }
        if o.first_capture.is_none() {
            o.first_capture = Some(e.captured_at);
        }
        o.last_out = Some(now);
        let stream = match o.streams.iter_mut().position(|s| s.id == e.stream) {
            Some(i) => &mut o.streams[i],
            None => {
                o.streams.push(StreamStats { id: e.stream, ..Default::default() });
                o.streams.last_mut().expect("just pushed")
            }
        };
        stream.frames_out += 1;
        match stream.last_seq {
            Some(last) if e.seq < last => stream.reordered += 1,
            _ => stream.last_seq = Some(e.seq),
        }
        e
    }

    pub(crate) fn shutdown(&mut self, grace: Duration) -> Result<Report, PipelineError> {
        if self.shut {
            return Ok(self.report());
        }
        self.shut = true;
        self.finish();
        let mut drained = self.drain_for(grace);
        if !drained {
            self.cancel.cancel();
            drained = self.drain_for(grace);
        }
        let mut hung = Vec::new();
        for (name, h) in self.threads.drain(..) {
            if drained || h.is_finished() {
                let _ = h.join();
            } else {
                hung.push(name);
            }
        }
        self.out_rx = None;
        let report = self.report();
        if !hung.is_empty() {
            return Err(PipelineError::Hung { threads: hung, report: Box::new(report) });
        }
        if let Some(f) = self.fault.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(PipelineError::StagePanicked {
                stage: f.stage,
                seq: f.seq,
                message: f.message,
                report: Box::new(report),
            });
        }
        Ok(report)
    }

    /// Reads and discards outputs until the pipeline ends or `grace` passes; true if it ended.
    fn drain_for(&mut self, grace: Duration) -> bool {
        if grace == Duration::MAX {
            while self.recv().is_some() {}
            return true;
        }
        let deadline = Instant::now() + grace;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_timeout(left) {
                Ok(_) => {}
                Err(RecvError::Ended) => return true,
                Err(RecvError::Timeout) => return self.ended,
            }
        }
    }
}

impl<In, Out> Drop for Pipeline<In, Out> {
    fn drop(&mut self) {
        if !self.shut {
            let _ = self.shutdown(DROP_GRACE);
        }
    }
}

impl<In, Out> std::fmt::Debug for Pipeline<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("stages", &self.stage_names).field("ended", &self.ended).finish()
    }
}

/// Takes [`Report`] snapshots of a running pipeline from any thread.
#[derive(Clone)]
pub struct Monitor {
    metrics: Arc<Metrics>,
    counters: Vec<Arc<EntranceCounters>>,
}

impl Monitor {
    /// A snapshot of the counters and latencies so far.
    pub fn report(&self) -> Report {
        self.metrics.report(&self.counters)
    }
}
