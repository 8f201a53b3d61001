use std::path::PathBuf;

/// Why video could not be read or written. Every message names the source or file.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The file does not exist.
    #[error("video file not found: {0}")]
    NotFound(PathBuf),
    /// The source exists but could not be opened (unreadable, not a video, unreachable).
    #[error("cannot open video source {source_name}: {reason}")]
    Open {
        /// The source as given.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The source is in a codec or container that the chosen backend does not read.
    #[error("video source {source_name}: {codec}: not supported by the native decoder; {hint}")]
    Unsupported {
        /// The source.
        source_name: String,
        /// The codec or container (`hevc`, `mpeg4`, `the flv container`, `rtsp streams`, …).
        codec: String,
        /// What would read it.
        hint: String,
    },
    /// The source opened but holds no decodable frame.
    #[error("video source {0} has no decodable frame (empty, or no frame the decoder could read)")]
    NoFrames(String),
    /// A frame could not be decoded (a truncated file, a dead stream).
    #[error("video source {source_name}: decoding failed at frame {frame}: {reason}")]
    Decode {
        /// The source.
        source_name: String,
        /// The index of the frame that failed.
        frame: u64,
        /// What went wrong.
        reason: String,
    },
    /// A live source stopped delivering frames.
    #[error("video source {source_name} stopped delivering frames after {frames} frames: {reason}")]
    Died {
        /// The source.
        source_name: String,
        /// Frames delivered before it died.
        frames: u64,
        /// What went wrong.
        reason: String,
    },
    /// Writing a video failed.
    #[error("cannot write video {path}: {reason}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A source string that names no known kind of source.
    #[error("bad video source `{0}`: {1}")]
    BadSpec(String, String),
    /// An image could not be read.
    #[error("cannot read image {path}: {reason}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}
