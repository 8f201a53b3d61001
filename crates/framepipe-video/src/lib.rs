//! # framepipe-video
//!
//! framepipe's media layer. A [`VideoSource`] decodes a file, a camera or a stream straight into
//! pooled BGR frames; a [`VideoSink`] writes frames to a video file; [`sample`] makes the project's
//! sample video; [`mjpeg`] is the MJPEG view, an HTTP server that streams frames to a browser.
//!
//! Two backends sit behind them, chosen per source ([`DecoderChoice`]):
//!
//! * **native** (always built, needs nothing from the system): MP4/MOV, Matroska/WebM, AVI and raw
//!   H.264 files; H.264 (Baseline, Main, High, B-frames; Cisco's OpenH264 built from source) and
//!   Motion-JPEG; HTTP multipart MJPEG streams and V4L2 cameras (MJPEG, YUYV); PNG and JPEG images;
//!   writing H.264 in MP4 and Motion-JPEG in AVI.
//! * **opencv** (feature `opencv`, links the system's OpenCV): GStreamer pipelines, RTSP and every
//!   codec OpenCV/FFmpeg reads. With [`DecoderChoice::Auto`] it reads what the native backend
//!   cannot.
//!
//! Frames carry the container's presentation times ([`VideoSource::stream_time`]), not a count.
//! This crate knows nothing of models: it moves BGR frames ([`framepipe_vision::Frame`]).
#![warn(missing_docs)]

mod backend;
mod error;
mod frames;
pub mod mjpeg;
mod native;
#[cfg(feature = "opencv")]
mod opencv_backend;
pub mod sample;
mod sink;
mod source;
mod spec;

pub use error::VideoError;
pub use sink::VideoSink;
pub use source::{read_image, write_image, DecoderChoice, OpenOptions, VideoInfo, VideoSource};
pub use spec::SourceSpec;

/// The YUV → BGR conversion of the native decoders (BT.601, limited range), for benchmarks and
/// for callers that hold I420 pictures of their own.
pub mod yuv {
    pub use crate::native::yuv::{i420_to_bgr, I420};
}

/// Quiets OpenCV's own console logging to errors only (it warns on stderr about every backend it
/// tries and fails); nothing without the `opencv` feature. framepipe reports failures itself.
pub fn quiet_opencv_logs() {
    #[cfg(feature = "opencv")]
    opencv_backend::quiet_logs();
}
