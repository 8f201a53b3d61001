//! # framepipe-app
//!
//! Detection pipelines built from framepipe's crates: the runtime stages that wrap preprocessing,
//! inference and postprocessing ([`stages`]), a single-threaded [`Detector`] for one image or the
//! serial baseline, the video benchmark ([`bench`](mod@bench)), and the camera demo: the perception
//! node a robot embeds ([`node`]), configured from a file ([`config`]), with its capture source,
//! latency windows and report ([`camera`]).
#![warn(missing_docs)]

pub mod assets;
pub mod bench;
pub mod camera;
pub mod config;
pub mod detect;
mod detector;
mod error;
mod model;
pub mod node;
pub mod plot;
pub mod stages;
pub mod trace;
pub mod tune;

pub use detector::{DetectOutput, Detector, Timings};
pub use error::AppError;
pub use model::{DetectModel, ModelKind, ModelOptions};
