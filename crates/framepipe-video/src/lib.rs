//! # framepipe-video
//!
//! Video in and out for framepipe, through OpenCV: a [`VideoSource`] that decodes a file, a camera, an
//! RTSP/HTTP stream or a GStreamer pipeline straight into pooled frames, a [`VideoSink`] that writes
//! frames to a video file, the project's sample video ([`sample`]), and the MJPEG view: an HTTP
//! server that streams frames to a browser ([`mjpeg`]).
//!
//! This crate knows nothing of models: it moves BGR frames ([`framepipe_vision::Frame`]).
#![warn(missing_docs)]

mod error;
pub mod mjpeg;
pub mod sample;
mod sink;
mod source;
mod spec;

pub use error::VideoError;
pub use sink::VideoSink;
pub use source::{read_image, write_image, OpenOptions, VideoInfo, VideoSource};
pub use spec::SourceSpec;

/// Quiets OpenCV's own console logging to errors only (it warns on stderr about every backend it tries
/// and fails). framepipe reports failures itself, with the file's name.
pub fn quiet_opencv_logs() {
    let _ = opencv::core::set_log_level(opencv::core::LogLevel::LOG_LEVEL_ERROR);
}
