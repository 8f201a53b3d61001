//! The runtime's errors.

use crate::metrics::Report;

/// Why a pipeline could not be built. Nothing runs when `build` fails.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A pipeline needs at least one stage.
    #[error("a pipeline needs at least one stage")]
    NoStages,
    /// More stages than envelopes have stamps for.
    #[error("{0} stages: a pipeline has at most {max} processing stages", max = crate::MAX_STAGES)]
    TooManyStages(usize),
    /// Two sources feed the same stream.
    #[error("two sources feed stream {0}: give each source its own stream")]
    SharedStream(u32),
    /// A pipeline needs at least one stream.
    #[error("a pipeline needs at least one stream")]
    NoStreams,
    /// A fan-out needs between 1 and MAX_BRANCHES branches.
    #[error("{0} branches: a fan-out has 1 to {max} branches", max = crate::MAX_BRANCHES)]
    BranchCount(usize),
    /// A branch needs at least one stage.
    #[error("branch `{0}` has no stage")]
    EmptyBranch(String),
    /// A stage name is empty or used twice.
    #[error("stage name `{0}` is empty or used twice; every stage needs its own name")]
    BadName(String),
    /// A stage with no replica would never run.
    #[error("stage `{0}`: replicas must be at least 1")]
    ZeroReplicas(String),
    /// A link needs room for at least one frame.
    #[error("the link into `{0}`: capacity must be at least 1")]
    ZeroCapacity(String),
    /// `max_in_flight` must be at least 1.
    #[error("max_in_flight must be at least 1")]
    ZeroInFlight,
    /// A deadline of zero would skip every frame.
    #[error("the deadline must be longer than zero")]
    ZeroDeadline,
    /// A pin names a core this process cannot run on.
    #[error(
        "stage `{stage}`: core {core} does not exist or is not available to this process (available: {available:?})"
    )]
    NoSuchCore {
        /// The stage (or source) name.
        stage: String,
        /// The core asked for.
        core: usize,
        /// The cores that exist.
        available: Vec<usize>,
    },
    /// A per-replica pin list does not have one entry per replica.
    #[error("stage `{stage}`: {pins} per-replica pin lists for {replicas} replicas")]
    PinCount {
        /// The stage name.
        stage: String,
        /// Pin lists given.
        pins: usize,
        /// Replicas.
        replicas: usize,
    },
    /// A real-time priority outside 1–99.
    #[error("stage `{stage}`: real-time priority {priority} is outside 1..=99")]
    BadPriority {
        /// The stage name.
        stage: String,
        /// The priority asked for.
        priority: u8,
    },
    /// A stage factory or its `on_start` hook failed, or panicked.
    #[error("stage `{stage}` replica {replica} failed to start: {error}")]
    StageInit {
        /// The stage name.
        stage: String,
        /// The replica.
        replica: usize,
        /// What went wrong.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The OS refused to start a thread.
    #[error("could not start the thread of `{stage}`: {error}")]
    Spawn {
        /// The stage name.
        stage: String,
        /// The OS error.
        error: std::io::Error,
    },
}

/// How a pipeline ended badly. The report is kept: the frames were still counted.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A stage panicked. Admission stopped then; the frames already inside came out in order, the
    /// panicked one as a [`Tombstone::Panicked`](crate::Tombstone::Panicked).
    #[error("stage `{stage}` panicked on frame {seq}: {message}")]
    StagePanicked {
        /// The stage.
        stage: String,
        /// The sequence number of the frame it panicked on.
        seq: u64,
        /// The panic message.
        message: String,
        /// The final report.
        report: Box<Report>,
    },
    /// Some threads did not finish within the grace periods of
    /// [`Pipeline::close_timeout`](crate::Pipeline::close_timeout), even after cancellation; they were
    /// left running, detached.
    #[error("threads still running after close and cancellation: {threads:?}")]
    Hung {
        /// The names of the threads still running.
        threads: Vec<String>,
        /// The report at that moment.
        report: Box<Report>,
    },
}

impl PipelineError {
    /// The report kept in the error.
    pub fn report(&self) -> &Report {
        match self {
            PipelineError::StagePanicked { report, .. } | PipelineError::Hung { report, .. } => report,
        }
    }
}
