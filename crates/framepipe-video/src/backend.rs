//! What every backend gives [`VideoSource`](crate::VideoSource): BGR frames written into the
//! caller's (pooled) frame, one read at a time, and how a read ended.

use std::time::Duration;

use framepipe_vision::Frame;

/// How one read ended.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// A frame was written, with the stream's own presentation time where it has one.
    Frame {
        /// The container's (or stream's) timestamp of the frame.
        pts: Option<Duration>,
    },
    /// One frame could not be decoded; the stream goes on.
    Corrupt {
        /// Why.
        reason: String,
    },
    /// The stream cannot go on (cut short, an I/O error, a network timeout).
    Failed {
        /// Why.
        reason: String,
        /// The I/O error's kind, when it was one (a read timeout is `TimedOut` or `WouldBlock`).
        io: Option<std::io::ErrorKind>,
    },
    /// The stream ended.
    End,
}

/// A backend's reader: a demuxer and decoder pair, or an OpenCV capture.
pub(crate) trait FrameReader: Send {
    /// Reads the next frame into `frame`, resizing it only if the stream's size differs.
    fn read_into(&mut self, frame: &mut Frame) -> ReadOutcome;
    /// The backend and what it reads, for reports (`native (mp4, h264)`, `opencv (FFMPEG)`).
    fn describe(&self) -> &str;
}
