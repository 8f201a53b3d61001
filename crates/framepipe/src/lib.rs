//! # framepipe
//!
//! A runtime for staged, pinned, ordered, measured pipelines: frames go from a source through stages,
//! each on its own OS thread, linked by bounded queues, and come out in capture order.
//!
//! This crate knows nothing of images, models or GPUs. Its stages are generic over their input and
//! output types; the vision and inference crates plug into it.
//!
//! ```
//! use framepipe::{Admission, Pipeline, StageConfig};
//! use std::convert::Infallible;
//!
//! let mut pipeline = Pipeline::<u64>::builder()
//!     .admission(Admission::Block)
//!     .stage_fn("double", |x: u64| Ok::<_, Infallible>(x * 2))
//!     // Three replicas, each with its own state; results still come out in order.
//!     .stage_fn(StageConfig::new("square").replicas(3), |x: u64| Ok::<_, Infallible>(x * x))
//!     .stage_fn("format", |x: u64| Ok::<_, Infallible>(format!("{x}")))
//!     .build()?;
//!
//! let input = pipeline.input();
//! let feeder = std::thread::spawn(move || {
//!     for i in 0..100u64 {
//!         input.push(i).unwrap();
//!     }
//! });
//! let mut got = Vec::new();
//! for out in pipeline.iter().take(100) {
//!     got.push((out.seq(), out.into_result().unwrap()));
//! }
//! feeder.join().unwrap();
//! let report = pipeline.close()?;
//!
//! assert_eq!(got[7], (7, "196".to_string()));
//! assert!(got.windows(2).all(|w| w[0].0 + 1 == w[1].0));
//! assert_eq!((report.frames_out, report.lost, report.reordered), (100, 0, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## How a frame travels
//!
//! * The **entrance** applies the [`Admission`] policy when its queue is full, and the first stage
//!   numbers each frame as it takes it ([`admission`] explains why numbers have no holes).
//! * A **stage** ([`Stage`]) runs on its own thread, or on several when replicated
//!   ([`StageConfig::replicas`]); replicas are built by one factory, share what it shares, and own
//!   their state.
//! * **Links** ([`link`]) are bounded queues with a per-link [`WaitStrategy`].
//! * A **reorder** step ([`reorder`]) before every single-replica stage that follows a replicated one,
//!   and at the output, restores sequence order; a cap on live frames (`max_in_flight`) bounds it.
//! * A frame that fails, is skipped for a deadline or hits a panic becomes a [`Tombstone`] in its
//!   slot, so order and counts stay exact.
//! * [`Report`]s give HDR-histogram percentiles of service time, queue wait and end-to-end latency.
#![warn(missing_docs)]

pub mod admission;
mod affinity;
mod builder;
mod envelope;
mod error;
mod flow;
pub mod link;
mod metrics;
mod pipeline;
pub mod pool;
pub mod reorder;
mod source;
mod stage;
mod sync;
mod wiring;

pub use admission::{Admission, Input, ParseAdmissionError, PushError};
pub use affinity::{available_cores, Pin, Priority};
pub use builder::{Branch, PipelineBuilder, SourceConfig, StageConfig};
pub use envelope::{Envelope, Meta, StageStamp, Tombstone, MAX_STAGES};
pub use error::{BuildError, PipelineError};
pub use link::{measure_hop, HopLatency, ParseWaitError, WaitStrategy};
pub use metrics::{BranchReport, LinkInfo, Percentiles, Report, StageReport, StreamStats};
pub use pipeline::{Monitor, Pipeline, RecvError, DROP_GRACE};
pub use source::{IterSource, Pace, Source};
pub use stage::{stage_fn, CancelToken, FnStage, Stage, StageContext};
pub use wiring::{prime_thread, Joined};

/// Most branches a fan-out may have.
pub const MAX_BRANCHES: usize = 8;
