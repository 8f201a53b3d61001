//! The envelope every item travels in, and the tombstone that stands in for a frame that failed.
//!
//! An [`Envelope`] is created when a frame is admitted (it gets its sequence number then) and is moved,
//! never copied, from link to link. Its stamps are a fixed-size array, so moving it allocates nothing.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most processing stages a pipeline may have (the source does not count).
///
/// Stamps live inline in the envelope, so this bounds its size (`MAX_STAGES` × 24 bytes).
pub const MAX_STAGES: usize = 12;

/// When one stage handled one frame, in nanoseconds after the frame's capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageStamp {
    /// The frame entered the stage (left its input link).
    pub enter_ns: u64,
    /// The frame left the stage (was handed to its output link).
    pub exit_ns: u64,
    /// Which replica of the stage handled it.
    pub replica: u16,
}

impl StageStamp {
    /// Whether the frame went through this stage.
    pub fn is_set(&self) -> bool {
        self.exit_ns != 0 || self.enter_ns != 0
    }

    /// Time spent inside the stage.
    pub fn service(&self) -> Duration {
        Duration::from_nanos(self.exit_ns.saturating_sub(self.enter_ns))
    }
}

/// Why a frame has no payload: it travels in its slot so that order and counts stay exact.
///
/// Cloning is cheap (the error is shared): a frame that fans out to several branches carries its
/// tombstone into each.
#[derive(Debug, Clone)]
pub enum Tombstone {
    /// A stage returned an error for this frame.
    Error {
        /// The stage's name.
        stage: Arc<str>,
        /// The stage's error.
        error: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The frame was older than the pipeline's deadline when it entered `stage`, and was not processed.
    Skipped {
        /// The stage that skipped it.
        stage: Arc<str>,
        /// The frame's age when it entered that stage.
        age: Duration,
    },
    /// The stage panicked while processing this frame.
    Panicked {
        /// The stage's name.
        stage: Arc<str>,
        /// The panic message, if it was a string.
        message: String,
    },
    /// The stage replica that should have processed this frame had panicked on an earlier frame, so
    /// the frame passed through unprocessed.
    Aborted {
        /// The stage's name.
        stage: Arc<str>,
    },
    /// The source failed to produce this frame (a decode error, a dead camera).
    Source {
        /// The source's error.
        error: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl Tombstone {
    /// The stage in which the frame was lost (`"source"` for a source error).
    pub fn stage(&self) -> &str {
        match self {
            Tombstone::Error { stage, .. }
            | Tombstone::Skipped { stage, .. }
            | Tombstone::Panicked { stage, .. }
            | Tombstone::Aborted { stage } => stage,
            Tombstone::Source { .. } => "source",
        }
    }

    /// True for a deadline skip; false for every kind of error.
    pub fn is_skip(&self) -> bool {
        matches!(self, Tombstone::Skipped { .. })
    }
}

impl fmt::Display for Tombstone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tombstone::Error { stage, error } => write!(f, "stage `{stage}` failed: {error}"),
            Tombstone::Skipped { stage, age } => {
                write!(f, "skipped at stage `{stage}`: {:.1} ms old, past the deadline", age.as_secs_f64() * 1e3)
            }
            Tombstone::Panicked { stage, message } => {
                write!(f, "stage `{stage}` panicked: {message}")
            }
            Tombstone::Aborted { stage } => {
                write!(f, "not processed: stage `{stage}` had panicked on an earlier frame")
            }
            Tombstone::Source { error } => write!(f, "source failed: {error}"),
        }
    }
}

impl std::error::Error for Tombstone {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Tombstone::Error { error, .. } | Tombstone::Source { error } => Some(error.as_ref()),
            _ => None,
        }
    }
}

/// One item in flight: its sequence number, stream, capture time, per-stage stamps and payload.
///
/// The pipeline's output is a stream of envelopes in sequence order. A frame that failed carries a
/// [`Tombstone`] instead of its payload, in its own slot.
#[derive(Debug)]
pub struct Envelope<T> {
    pub(crate) seq: u64,
    pub(crate) stream: u32,
    pub(crate) captured_at: Instant,
    pub(crate) stamps: [StageStamp; MAX_STAGES],
    /// Stamp slots in use: one past the highest stage index stamped.
    pub(crate) stages: u8,
    /// When the frame left the last node it went through (a stage or a join), in ns after capture.
    pub(crate) last_exit_ns: u64,
    /// The payload was a tombstone before a fan-out: the join emits it whole.
    pub(crate) forked_tombstone: bool,
    pub(crate) payload: Result<T, Tombstone>,
}

impl<T> Envelope<T> {
    pub(crate) fn new(seq: u64, stream: u32, captured_at: Instant, payload: Result<T, Tombstone>) -> Self {
        Envelope {
            seq,
            stream,
            captured_at,
            stamps: [StageStamp::default(); MAX_STAGES],
            stages: 0,
            last_exit_ns: 0,
            forked_tombstone: false,
            payload,
        }
    }

    /// The frame's sequence number: 0, 1, 2, … in admission order, without holes.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The stream (camera) the frame came from.
    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// When the frame was captured (read from its source).
    pub fn captured_at(&self) -> Instant {
        self.captured_at
    }

    /// Per-stage stamps, indexed by stage (in the order the stages were added to the builder,
    /// branches one after the other). A stage the frame did not go through (another branch's, or
    /// one after the frame's current position) has a zero stamp.
    pub fn stamps(&self) -> &[StageStamp] {
        &self.stamps[..self.stages as usize]
    }

    /// The payload, or the tombstone that stands in its slot.
    pub fn result(&self) -> Result<&T, &Tombstone> {
        self.payload.as_ref()
    }

    /// The payload, if the frame was processed.
    pub fn payload(&self) -> Option<&T> {
        self.payload.as_ref().ok()
    }

    /// Consumes the envelope, giving the payload or the tombstone.
    pub fn into_result(self) -> Result<T, Tombstone> {
        self.payload
    }

    /// Consumes the envelope, giving the payload and the metadata apart.
    pub fn into_parts(self) -> (Meta, Result<T, Tombstone>) {
        let meta = Meta {
            seq: self.seq,
            stream: self.stream,
            captured_at: self.captured_at,
            stamps: self.stamps,
            stages: self.stages,
        };
        (meta, self.payload)
    }
}

/// An envelope's metadata without its payload (see [`Envelope::into_parts`]).
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    /// Sequence number.
    pub seq: u64,
    /// Stream id.
    pub stream: u32,
    /// Capture time.
    pub captured_at: Instant,
    stamps: [StageStamp; MAX_STAGES],
    stages: u8,
}

impl Meta {
    /// Per-stage stamps, as in [`Envelope::stamps`].
    pub fn stamps(&self) -> &[StageStamp] {
        &self.stamps[..self.stages as usize]
    }
}
