//! Decoding into pooled frames, through the backend chosen per source.

use std::path::Path;
use std::time::{Duration, Instant};

use framepipe::pool::{Pool, Pooled};
use framepipe_vision::{Frame, FrameRef, PixelFormat};

use crate::backend::{FrameReader, ReadOutcome};
use crate::native::{self, DemuxError};
use crate::{SourceSpec, VideoError};

/// Which backend decodes a source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecoderChoice {
    /// The native backend first; OpenCV (where the `opencv` feature is built in) for what the
    /// native one cannot read: GStreamer pipelines, RTSP, codecs other than H.264 and MJPEG.
    #[default]
    Auto,
    /// Only the native backend.
    Native,
    /// Only OpenCV (needs the `opencv` feature).
    OpenCv,
}

impl DecoderChoice {
    /// Whether this build has the OpenCV backend.
    pub const OPENCV_BUILT_IN: bool = cfg!(feature = "opencv");
}

impl std::fmt::Display for DecoderChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecoderChoice::Auto => "auto",
            DecoderChoice::Native => "native",
            DecoderChoice::OpenCv => "opencv",
        })
    }
}

impl std::str::FromStr for DecoderChoice {
    type Err = VideoError;
    fn from_str(s: &str) -> Result<Self, VideoError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DecoderChoice::Auto),
            "native" => Ok(DecoderChoice::Native),
            "opencv" => Ok(DecoderChoice::OpenCv),
            _ => Err(VideoError::BadSpec(s.into(), "a decoder is auto, native or opencv".into())),
        }
    }
}

/// What a source announced when it opened.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// The source as given.
    pub source: String,
    /// Frame width in pixels (of the first frame).
    pub width: usize,
    /// Frame height in pixels (of the first frame).
    pub height: usize,
    /// Frames per second, if the source says.
    pub fps: Option<f64>,
    /// Frames in the file, if the container says (an estimate for some containers).
    pub frames: Option<u64>,
    /// The backend and what it reads: `native (mp4, h264)`, `native (http-mjpeg, mjpeg)`,
    /// `opencv (FFMPEG)`, …
    pub backend: String,
    /// Whether it is a live source.
    pub live: bool,
}

/// How to open a source: the backend, and time limits for network streams.
///
/// Both limits hold for network streams (`http://` natively; `rtsp://` and the rest through
/// OpenCV's FFmpeg backend): an unreachable host fails the open after `open_timeout`, and a stream
/// that stops sending ends with [`VideoError::Died`] after `read_timeout` instead of blocking the
/// reading thread forever. Cameras, GStreamer pipelines and files ignore them; a caller that must
/// never block on those reads on a thread of its own and watches it (as `framepipe-app`'s camera
/// source does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Longest time opening a network stream may take (default 10 s; `None`: the backend's own).
    pub open_timeout: Option<Duration>,
    /// Longest time one read from a network stream may wait for data (default 5 s; `None`: the
    /// backend's own, which may be forever).
    pub read_timeout: Option<Duration>,
    /// Which backend decodes (default [`DecoderChoice::Auto`]).
    pub decoder: DecoderChoice,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            open_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(5)),
            decoder: DecoderChoice::Auto,
        }
    }
}

/// An opened reader and what its container announced (frames per second, frame count).
type Opened = (Box<dyn FrameReader>, (Option<f64>, Option<u64>));

/// Undecodable packets skipped while looking for the first frame, at most.
const MAX_SKIPPED_AT_OPEN: u32 = 300;

/// Decodes a video file, camera or stream into frames from a pool: each frame is decoded straight
/// into a pooled buffer, which returns to the pool when the last stage drops it.
///
/// It is a [`framepipe::Source`]: a pipeline runs it on its own thread. A frame that cannot be
/// decoded is delivered as one `Err` and the stream goes on; a stream that cannot go on (cut short,
/// a dead connection) delivers one `Err` and ends.
pub struct VideoSource {
    reader: Box<dyn FrameReader>,
    spec: SourceSpec,
    info: VideoInfo,
    pool: Pool<Frame>,
    first: Option<(Frame, Option<Duration>)>,
    /// Frames that failed to decode before the first one, still to be reported.
    pending_errors: Vec<String>,
    delivered: u64,
    failed: u64,
    limit: Option<u64>,
    done: bool,
    /// Whether the stream already reported why it ended.
    ended_with_error: bool,
    read_timeout: Option<Duration>,
    stream_time: Option<Duration>,
}

impl VideoSource {
    /// Opens a source and decodes its first frame (to learn the frame size). `pool` is how many frames
    /// the pool keeps; size it by how many frames can be alive at once in the pipeline. Network
    /// streams get the default [`OpenOptions`] time limits.
    pub fn open(spec: &SourceSpec, pool: usize) -> Result<Self, VideoError> {
        Self::open_with(spec, pool, &OpenOptions::default())
    }

    /// Like [`open`](VideoSource::open), with explicit options.
    pub fn open_with(spec: &SourceSpec, pool: usize, options: &OpenOptions) -> Result<Self, VideoError> {
        let name = spec.to_string();
        if let SourceSpec::File(p) = spec {
            if !p.exists() {
                return Err(VideoError::NotFound(p.clone()));
            }
            if p.is_dir() {
                return Err(VideoError::Open { source_name: name, reason: "it is a directory".into() });
            }
            std::fs::File::open(p)
                .map_err(|e| VideoError::Open { source_name: name.clone(), reason: e.to_string() })?;
        }
        let (mut reader, announced) = open_reader(spec, options)?;
        let mut first = Frame::new(1, 1, PixelFormat::Bgr8)
            .map_err(|e| VideoError::Open { source_name: name.clone(), reason: e.to_string() })?;
        let mut pending_errors = Vec::new();
        let pts = loop {
            match reader.read_into(&mut first) {
                ReadOutcome::Frame { pts } => break pts,
                ReadOutcome::Corrupt { reason } if (pending_errors.len() as u32) < MAX_SKIPPED_AT_OPEN => {
                    pending_errors.push(reason);
                }
                ReadOutcome::Corrupt { reason } | ReadOutcome::Failed { reason, .. } => {
                    return Err(VideoError::Open { source_name: name, reason: no_first_frame(&reason) });
                }
                ReadOutcome::End => return Err(VideoError::NoFrames(name)),
            }
        };
        let (width, height) = (first.width(), first.height());
        let info = VideoInfo {
            source: name,
            width,
            height,
            fps: announced.0,
            frames: announced.1,
            backend: reader.describe().to_string(),
            live: spec.is_live(),
        };
        let pool = Pool::new(pool.max(1), pool.max(1), move || {
            Frame::new(width, height, PixelFormat::Bgr8).expect("a decoded size is a valid frame size")
        });
        Ok(VideoSource {
            reader,
            spec: spec.clone(),
            info,
            pool,
            first: Some((first, pts)),
            pending_errors,
            delivered: 0,
            failed: 0,
            limit: None,
            done: false,
            ended_with_error: false,
            read_timeout: match spec {
                SourceSpec::Url(_) => options.read_timeout,
                _ => None,
            },
            stream_time: None,
        })
    }

    /// The stream's own timestamp of the frame [`read_frame`](VideoSource::read_frame) delivered
    /// last: a file's presentation time from its container (so B-frames and variable frame rates
    /// give the right times), a V4L2 camera's buffer time or a GStreamer buffer's running time
    /// through OpenCV. `None` where the source has none (raw H.264, MJPEG over HTTP). Only
    /// differences between frames of one source are meaningful: the origin is the source's.
    pub fn stream_time(&self) -> Option<Duration> {
        self.stream_time
    }

    /// What the source announced.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// The frame pool (to see how many frames it created).
    pub fn pool(&self) -> &Pool<Frame> {
        &self.pool
    }

    /// Ends the stream after `n` frames.
    pub fn with_limit(mut self, n: Option<u64>) -> Self {
        self.limit = n;
        self
    }

    /// Frames delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Frames that could not be decoded so far (each was delivered as an `Err`).
    pub fn decode_errors(&self) -> u64 {
        self.failed
    }

    /// The next frame, a decode error, or `None` at the end.
    pub fn read_frame(&mut self) -> Option<Result<Pooled<Frame>, VideoError>> {
        if self.done || self.limit.is_some_and(|n| self.delivered >= n) {
            return None;
        }
        if !self.pending_errors.is_empty() {
            let reason = self.pending_errors.remove(0);
            return Some(Err(self.decode_error(reason)));
        }
        let mut frame = self.pool.take();
        if let Some((first, pts)) = self.first.take() {
            // The first frame was decoded at open into a frame of its own: it takes the pooled
            // frame's place (the pooled buffer is freed), so nothing is copied.
            *frame = first;
            self.stream_time = pts;
            self.delivered += 1;
            return Some(Ok(frame));
        }
        let started = Instant::now();
        match self.reader.read_into(&mut frame) {
            ReadOutcome::Frame { pts } => {
                self.stream_time = pts;
                self.delivered += 1;
                Some(Ok(frame))
            }
            ReadOutcome::Corrupt { reason } => Some(Err(self.decode_error(reason))),
            ReadOutcome::Failed { reason, io } => {
                self.done = true;
                self.ended_with_error = true;
                let stalled = matches!(io, Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock));
                if self.spec.is_live() {
                    Some(Err(self.died(started.elapsed(), stalled, reason)))
                } else {
                    Some(Err(self.decode_error(reason)))
                }
            }
            ReadOutcome::End => {
                self.done = true;
                self.end_of_stream(started.elapsed())
            }
        }
    }

    fn decode_error(&mut self, reason: String) -> VideoError {
        self.failed += 1;
        VideoError::Decode { source_name: self.info.source.clone(), frame: self.delivered + self.failed - 1, reason }
    }

    fn died(&self, waited: Duration, stalled: bool, reason: String) -> VideoError {
        let reason = match self.read_timeout {
            Some(t) if stalled || waited >= t.mul_f64(0.8) => {
                format!("no data for {:.1} s (the read timeout): the stream stalled", waited.as_secs_f64())
            }
            _ => reason,
        };
        VideoError::Died { source_name: self.info.source.clone(), frames: self.delivered, reason }
    }

    /// The source ended: fine for a file that delivered what it announced, an error otherwise.
    /// `waited` is how long the failed read took (a read that ran into the read timeout stalled).
    fn end_of_stream(&mut self, waited: Duration) -> Option<Result<Pooled<Frame>, VideoError>> {
        let name = self.info.source.clone();
        let seen = self.delivered + self.failed;
        match (&self.spec, self.info.frames) {
            // Containers estimate their frame count; a shortfall of a couple of frames is normal.
            (SourceSpec::File(_), Some(n))
                if !self.ended_with_error && seen + 2 < n && self.limit.is_none_or(|l| self.delivered < l) =>
            {
                self.failed += 1;
                Some(Err(VideoError::Decode {
                    source_name: name,
                    frame: seen,
                    reason: format!(
                        "the stream ended after {} of {n} announced frames (truncated or undecodable)",
                        self.delivered
                    ),
                }))
            }
            (SourceSpec::File(_), _) => None,
            _ => Some(Err(self.died(
                waited,
                false,
                "the capture returned no frame (the stream ended or the device disappeared)".into(),
            ))),
        }
    }
}

impl framepipe::Source for VideoSource {
    type Item = Pooled<Frame>;
    type Error = VideoError;
    fn next(&mut self) -> Option<Result<Pooled<Frame>, VideoError>> {
        self.read_frame()
    }
}

/// The open error's reason when no frame could be decoded at all.
fn no_first_frame(reason: &str) -> String {
    format!("no frame could be decoded ({reason})")
}

/// Opens the reader for `spec` with the backend `options` ask for, and what its container
/// announced (frames per second, frame count).
fn open_reader(spec: &SourceSpec, options: &OpenOptions) -> Result<Opened, VideoError> {
    let name = spec.to_string();
    match options.decoder {
        DecoderChoice::Native => open_native(spec, options).map_err(|e| native_error(&name, e, false)),
        DecoderChoice::OpenCv => open_opencv(spec, options),
        DecoderChoice::Auto => match open_native(spec, options) {
            Ok(r) => Ok(r),
            Err(e @ (DemuxError::Unsupported { .. } | DemuxError::Malformed(_))) if DecoderChoice::OPENCV_BUILT_IN => {
                // Native first; what it cannot read goes to OpenCV, and if OpenCV cannot either,
                // the native reason is the one to show (it names the codec).
                open_opencv(spec, options).map_err(|cv| match native_error(&name, e, true) {
                    VideoError::Open { source_name, reason } => {
                        VideoError::Open { source_name, reason: format!("{reason}; OpenCV: {cv}") }
                    }
                    other => other,
                })
            }
            Err(e) => Err(native_error(&name, e, false)),
        },
    }
}

fn open_native(spec: &SourceSpec, options: &OpenOptions) -> Result<Opened, DemuxError> {
    let (demuxer, stride) = match spec {
        SourceSpec::File(p) => (native::open::open_file(p)?, 0),
        SourceSpec::Url(u) if u.to_ascii_lowercase().starts_with("http") => {
            (native::open::open_http(u, options.open_timeout, options.read_timeout)?, 0)
        }
        SourceSpec::Url(u) => {
            let scheme = u.split("://").next().unwrap_or("").to_ascii_lowercase();
            return Err(DemuxError::Unsupported { codec: format!("{scheme} streams") });
        }
        SourceSpec::GStreamer(_) => return Err(DemuxError::Unsupported { codec: "GStreamer pipelines".into() }),
        SourceSpec::Camera(i) => native::open::open_camera(*i)?,
    };
    let reader = native::open::NativeReader::new(demuxer, stride)?;
    let announced = reader.announced();
    Ok((Box::new(reader), announced))
}

/// The error for a source the native backend could not open. `tried_opencv`: OpenCV was tried too.
fn native_error(name: &str, e: DemuxError, tried_opencv: bool) -> VideoError {
    match e {
        DemuxError::Unsupported { codec } => VideoError::Unsupported {
            source_name: name.to_string(),
            codec,
            hint: if tried_opencv {
                "OpenCV could not read it either".into()
            } else if DecoderChoice::OPENCV_BUILT_IN {
                "use --decoder opencv (or decoder = \"opencv\")".into()
            } else {
                "build with --features opencv".into()
            },
        },
        DemuxError::Io(io)
            if io.kind() == std::io::ErrorKind::NotFound && matches!(name, n if n.starts_with("/dev/video")) =>
        {
            VideoError::Open { source_name: name.to_string(), reason: "no such camera, or it is busy".into() }
        }
        other => VideoError::Open { source_name: name.to_string(), reason: other.to_string() },
    }
}

#[cfg(feature = "opencv")]
fn open_opencv(spec: &SourceSpec, options: &OpenOptions) -> Result<Opened, VideoError> {
    let r = crate::opencv_backend::OpenCvReader::open(spec, options)?;
    let announced = r.announced();
    Ok((Box::new(r), announced))
}

#[cfg(not(feature = "opencv"))]
fn open_opencv(spec: &SourceSpec, _options: &OpenOptions) -> Result<Opened, VideoError> {
    Err(VideoError::Open {
        source_name: spec.to_string(),
        reason: "this framepipe was built without the opencv feature (--decoder opencv needs it)".into(),
    })
}

/// Reads an image file (PNG or JPEG natively; every format OpenCV reads with the `opencv`
/// feature) as a BGR frame.
pub fn read_image(path: &Path) -> Result<Frame, VideoError> {
    let err = |reason: String| VideoError::Image { path: path.to_path_buf(), reason };
    if !path.exists() {
        return Err(err("no such file".into()));
    }
    match native::image::read(path) {
        Ok(f) => Ok(f),
        #[cfg(feature = "opencv")]
        Err(native) => crate::opencv_backend::read_image(path).map_err(|cv| err(format!("{native}; OpenCV: {cv}"))),
        #[cfg(not(feature = "opencv"))]
        Err(native) => Err(err(native)),
    }
}

/// Writes a frame to an image file: `.png` or `.jpg`.
pub fn write_image(path: &Path, frame: FrameRef<'_>) -> Result<(), VideoError> {
    native::image::write(path, frame).map_err(|reason| VideoError::Image { path: path.to_path_buf(), reason })
}
