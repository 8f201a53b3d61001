//! The crate's single error type.

use std::path::PathBuf;

use crate::frame::PixelFormat;

/// Every error this crate reports.
///
/// Messages name the cause and the numbers involved, so they can be shown to an
/// operator as-is, e.g.
/// `frame buffer too small: need 6220800 bytes for 1920x1080 BGR8 with stride 5760, got 100`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VisionError {
    /// Width or height of a frame (or of a model input) is zero.
    #[error("invalid frame size {width}x{height}: width and height must both be > 0")]
    ZeroSize {
        /// Requested width in pixels.
        width: usize,
        /// Requested height in pixels.
        height: usize,
    },

    /// Row stride is smaller than one row of pixels.
    #[error("invalid stride {stride} for {width}x{height} {format}: a row needs at least {min_stride} bytes")]
    StrideTooSmall {
        /// Frame width in pixels.
        width: usize,
        /// Frame height in pixels.
        height: usize,
        /// Pixel format of the frame.
        format: PixelFormat,
        /// The stride that was given, in bytes.
        stride: usize,
        /// `width * channels`, the smallest valid stride.
        min_stride: usize,
    },

    /// The pixel buffer is shorter than `stride * (height - 1) + width * channels`.
    #[error("frame buffer too small: need {need} bytes for {width}x{height} {format} with stride {stride}, got {got}")]
    BufferTooSmall {
        /// Frame width in pixels.
        width: usize,
        /// Frame height in pixels.
        height: usize,
        /// Pixel format of the frame.
        format: PixelFormat,
        /// Row stride in bytes.
        stride: usize,
        /// Bytes required.
        need: usize,
        /// Bytes provided.
        got: usize,
    },

    /// Frame dimensions whose byte size does not fit in `usize`.
    #[error("frame size {width}x{height} {format} overflows the address space")]
    SizeOverflow {
        /// Frame width in pixels.
        width: usize,
        /// Frame height in pixels.
        height: usize,
        /// Pixel format of the frame.
        format: PixelFormat,
    },

    /// The caller's output tensor buffer has the wrong length.
    #[error("output tensor has wrong length: need {need} f32 values (3x{height}x{width} NCHW), got {got}")]
    OutputSize {
        /// Model input width.
        width: usize,
        /// Model input height.
        height: usize,
        /// Required length.
        need: usize,
        /// Provided length.
        got: usize,
    },

    /// A configuration value is out of range (thresholds, normalisation, strides…).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A tensor's shape does not fit the decoder (or does not match its data length).
    #[error("bad tensor shape {shape:?} for {decoder}: {reason}")]
    TensorShape {
        /// Name of the decoder (or "tensor" for generic view validation).
        decoder: &'static str,
        /// The shape that was given.
        shape: Vec<usize>,
        /// Why it was refused.
        reason: String,
    },

    /// The decoder was given the wrong number of output tensors.
    #[error("{decoder} expects {expected} output tensor(s), got {got}")]
    OutputCount {
        /// Name of the decoder.
        decoder: &'static str,
        /// Human readable expectation, e.g. "3 or 4".
        expected: &'static str,
        /// Number of tensors that were given.
        got: usize,
    },

    /// The model output layout could not be inferred from its shape.
    #[error("cannot infer detection layout from output shape {shape:?}: {reason}")]
    AmbiguousLayout {
        /// The output shape.
        shape: Vec<usize>,
        /// Why it is ambiguous or unknown.
        reason: String,
    },

    /// A labels text could not be parsed.
    #[error("cannot parse labels at byte {position}: {reason}")]
    LabelsParse {
        /// Byte offset into the input where parsing failed.
        position: usize,
        /// What was expected or found.
        reason: String,
    },

    /// A labels file could not be read.
    #[error("cannot read labels file {path}: {source}")]
    Io {
        /// The file that was opened.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}
