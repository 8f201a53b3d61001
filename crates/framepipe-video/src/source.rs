//! Decoding into pooled frames.

use std::ffi::c_void;
use std::path::Path;
use std::time::{Duration, Instant};

use framepipe::pool::{Pool, Pooled};
use framepipe_vision::{Frame, FrameRef, PixelFormat};
use opencv::core::{Mat, MatTraitConst, MatTraitConstManual, Vector, CV_8UC1, CV_8UC3};
use opencv::prelude::{VideoCaptureTrait, VideoCaptureTraitConst};
use opencv::videoio::{self, VideoCapture};

use crate::{SourceSpec, VideoError};

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
    /// The OpenCV backend that opened it.
    pub backend: String,
    /// Whether it is a live source.
    pub live: bool,
}

/// How to open a source: time limits for network streams.
///
/// OpenCV's FFmpeg backend honours both limits for URL sources (`rtsp://`, `http://`, `tcp://`, …):
/// an unreachable host fails the open after `open_timeout`, and a stream that stops sending ends
/// with [`VideoError::Died`] after `read_timeout` instead of blocking the reading thread forever.
/// Cameras, GStreamer pipelines and files ignore them (OpenCV 4.6's GStreamer backend refuses the
/// properties); a caller that must never block on those reads on a thread of its own and watches it
/// (as `framepipe-app`'s camera source does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Longest time opening a network stream may take (default 10 s; `None`: the backend's own).
    pub open_timeout: Option<Duration>,
    /// Longest time one read from a network stream may wait for data (default 5 s; `None`: the
    /// backend's own, which may be forever).
    pub read_timeout: Option<Duration>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { open_timeout: Some(Duration::from_secs(10)), read_timeout: Some(Duration::from_secs(5)) }
    }
}

impl OpenOptions {
    /// The options as OpenCV open parameters (pairs of property and value, in milliseconds).
    fn params(&self) -> Vector<i32> {
        let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut v = Vector::new();
        if let Some(d) = self.open_timeout {
            v.push(videoio::CAP_PROP_OPEN_TIMEOUT_MSEC);
            v.push(ms(d));
        }
        if let Some(d) = self.read_timeout {
            v.push(videoio::CAP_PROP_READ_TIMEOUT_MSEC);
            v.push(ms(d));
        }
        v
    }
}

/// Decodes a video file, camera or stream into frames from a pool, without copying: each frame is
/// decoded straight into a pooled buffer, which returns to the pool when the last stage drops it.
///
/// It is a [`framepipe::Source`]: a pipeline runs it on its own thread. A decode failure is delivered
/// as one `Err` (the frames before it were delivered), then the stream ends.
pub struct VideoSource {
    cap: VideoCapture,
    spec: SourceSpec,
    info: VideoInfo,
    pool: Pool<Frame>,
    first: Option<Mat>,
    delivered: u64,
    limit: Option<u64>,
    done: bool,
    read_timeout: Option<Duration>,
    first_time: Option<Duration>,
    stream_time: Option<Duration>,
}

impl VideoSource {
    /// Opens a source and decodes its first frame (to learn the frame size). `pool` is how many frames
    /// the pool keeps; size it by how many frames can be alive at once in the pipeline. Network
    /// streams get the default [`OpenOptions`] time limits.
    pub fn open(spec: &SourceSpec, pool: usize) -> Result<Self, VideoError> {
        Self::open_with(spec, pool, &OpenOptions::default())
    }

    /// Like [`open`](VideoSource::open), with explicit time limits for network streams.
    pub fn open_with(spec: &SourceSpec, pool: usize, options: &OpenOptions) -> Result<Self, VideoError> {
        let name = spec.to_string();
        let open_err = |reason: String| VideoError::Open { source_name: name.clone(), reason };
        let cap = match spec {
            SourceSpec::File(p) => {
                if !p.exists() {
                    return Err(VideoError::NotFound(p.clone()));
                }
                if p.is_dir() {
                    return Err(open_err("it is a directory".into()));
                }
                std::fs::File::open(p).map_err(|e| open_err(e.to_string()))?;
                // FFmpeg first: it reads every common container; the other backends are a fallback.
                match VideoCapture::from_file(path_str(p)?, videoio::CAP_FFMPEG) {
                    Ok(c) if c.is_opened().unwrap_or(false) => Ok(c),
                    _ => VideoCapture::from_file(path_str(p)?, videoio::CAP_ANY),
                }
            }
            SourceSpec::Url(u) => VideoCapture::from_file_with_params(u, videoio::CAP_FFMPEG, &options.params()),
            SourceSpec::GStreamer(p) => VideoCapture::from_file(p, videoio::CAP_GSTREAMER),
            SourceSpec::Camera(i) => VideoCapture::new(*i, videoio::CAP_V4L2),
        }
        .map_err(|e| open_err(e.message))?;
        if !cap.is_opened().unwrap_or(false) {
            return Err(open_err(match spec {
                SourceSpec::File(_) => "not a video OpenCV can read (unknown container or no backend for it)".into(),
                SourceSpec::Camera(_) => "no such camera, or it is busy".into(),
                _ => "the stream did not open (unreachable, or no backend for it)".into(),
            }));
        }
        let backend = cap.get_backend_name().unwrap_or_else(|_| "unknown".into());
        let fps = cap.get(videoio::CAP_PROP_FPS).ok().filter(|f| f.is_finite() && *f > 0.0 && *f < 1000.0);
        let frames = match spec {
            SourceSpec::File(_) => cap.get(videoio::CAP_PROP_FRAME_COUNT).ok().filter(|n| *n >= 1.0).map(|n| n as u64),
            _ => None,
        };
        let mut cap = cap;
        let mut first = Mat::default();
        let ok = cap.read(&mut first).unwrap_or(false);
        if !ok || first.empty() {
            return Err(VideoError::NoFrames(name));
        }
        let first_time = position(&cap);
        let (width, height) = (first.cols() as usize, first.rows() as usize);
        let info = VideoInfo { source: name, width, height, fps, frames, backend, live: spec.is_live() };
        let pool = Pool::new(pool.max(1), pool.max(1), move || {
            Frame::new(width, height, PixelFormat::Bgr8).expect("a decoded size is a valid frame size")
        });
        Ok(VideoSource {
            cap,
            spec: spec.clone(),
            info,
            pool,
            first: Some(first),
            delivered: 0,
            limit: None,
            done: false,
            read_timeout: match spec {
                SourceSpec::Url(_) => options.read_timeout,
                _ => None,
            },
            first_time,
            stream_time: None,
        })
    }

    /// The stream's own timestamp of the frame [`read_frame`](VideoSource::read_frame) delivered
    /// last, as OpenCV reports it (`CAP_PROP_POS_MSEC`): a file's or a timestamped stream's
    /// presentation time, a V4L2 camera's buffer time, a GStreamer buffer's running time. `None`
    /// where the source has none (MJPEG over HTTP carries no timestamps). Only differences between
    /// frames of one source are meaningful: the origin is the source's.
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

    /// The next frame, a decode error, or `None` at the end.
    pub fn read_frame(&mut self) -> Option<Result<Pooled<Frame>, VideoError>> {
        if self.done || self.limit.is_some_and(|n| self.delivered >= n) {
            return None;
        }
        let mut frame = self.pool.take();
        let started = Instant::now();
        let result = match self.first.take() {
            Some(first) => {
                self.stream_time = self.first_time;
                copy_into(&first, &mut frame).map(|_| true)
            }
            None => self.decode_into(&mut frame).inspect(|ok| {
                if *ok {
                    self.stream_time = position(&self.cap);
                }
            }),
        };
        match result {
            Ok(true) => {
                self.delivered += 1;
                Some(Ok(frame))
            }
            Ok(false) => {
                self.done = true;
                self.end_of_stream(started.elapsed())
            }
            Err(reason) => {
                self.done = true;
                Some(Err(VideoError::Decode { source_name: self.info.source.clone(), frame: self.delivered, reason }))
            }
        }
    }

    /// The source ended: fine for a file that delivered what it announced, an error otherwise.
    /// `waited` is how long the failed read took (a read that ran into the read timeout stalled).
    fn end_of_stream(&mut self, waited: Duration) -> Option<Result<Pooled<Frame>, VideoError>> {
        let name = self.info.source.clone();
        match (&self.spec, self.info.frames) {
            // Containers estimate their frame count; a shortfall of a couple of frames is normal.
            (SourceSpec::File(_), Some(n))
                if self.delivered + 2 < n && self.limit.is_none_or(|l| self.delivered < l) =>
            {
                Some(Err(VideoError::Decode {
                    source_name: name,
                    frame: self.delivered,
                    reason: format!(
                        "the stream ended after {} of {n} announced frames (truncated or undecodable)",
                        self.delivered
                    ),
                }))
            }
            (SourceSpec::File(_), _) => None,
            _ => Some(Err(VideoError::Died {
                source_name: name,
                frames: self.delivered,
                reason: match self.read_timeout {
                    // FFmpeg gives up a little before or after the limit; most of it is enough.
                    Some(t) if waited >= t.mul_f64(0.8) => {
                        format!("no data for {:.1} s (the read timeout): the stream stalled", waited.as_secs_f64())
                    }
                    _ => "the capture returned no frame (the stream ended or the device disappeared)".into(),
                },
            })),
        }
    }

    /// Decodes the next frame straight into `frame`'s buffer.
    fn decode_into(&mut self, frame: &mut Frame) -> Result<bool, String> {
        let (w, h, stride) = (frame.width(), frame.height(), frame.stride());
        let ptr = frame.data_mut().as_mut_ptr();
        // SAFETY: the header describes exactly `frame`'s buffer (h rows of `stride` bytes, w BGR pixels
        // each, checked by `Frame`), which outlives the header: the header is dropped at the end of
        // this function, and `frame` is borrowed mutably for all of it, so nothing else touches it.
        let mut mat =
            unsafe { Mat::new_rows_cols_with_data_unsafe(h as i32, w as i32, CV_8UC3, ptr as *mut c_void, stride) }
                .map_err(|e| e.message)?;
        let ok = self.cap.read(&mut mat).map_err(|e| e.message)?;
        if !ok || mat.empty() {
            return Ok(false);
        }
        if !std::ptr::eq(mat.data(), ptr) {
            // OpenCV decoded into a buffer of its own (the frame size or format changed): copy.
            copy_into(&mat, frame)?;
        }
        Ok(true)
    }
}

impl framepipe::Source for VideoSource {
    type Item = Pooled<Frame>;
    type Error = VideoError;
    fn next(&mut self) -> Option<Result<Pooled<Frame>, VideoError>> {
        self.read_frame()
    }
}

/// The capture's position (timestamp of the last frame read), if it is a plausible time. Backends
/// without timestamps report garbage (FFmpeg's MJPEG-over-HTTP demuxer: about -3.7e20 ms).
fn position(cap: &VideoCapture) -> Option<Duration> {
    let ms = cap.get(videoio::CAP_PROP_POS_MSEC).ok()?;
    (ms.is_finite() && (0.0..1e13).contains(&ms)).then(|| Duration::from_secs_f64(ms / 1e3))
}

fn path_str(p: &Path) -> Result<&str, VideoError> {
    p.to_str().ok_or_else(|| VideoError::Open {
        source_name: p.display().to_string(),
        reason: "the path is not UTF-8".into(),
    })
}

/// Copies (converting gray to BGR) a decoded image into a frame, resizing the frame if needed.
pub(crate) fn copy_into(mat: &Mat, frame: &mut Frame) -> Result<(), String> {
    let (w, h) = (mat.cols() as usize, mat.rows() as usize);
    let bgr;
    let src = match mat.typ() {
        t if t == CV_8UC3 => mat,
        t if t == CV_8UC1 => {
            let mut out = Mat::default();
            opencv::imgproc::cvt_color_def(mat, &mut out, opencv::imgproc::COLOR_GRAY2BGR).map_err(|e| e.message)?;
            bgr = out;
            &bgr
        }
        t => return Err(format!("unsupported pixel type {t} (expected 8-bit BGR or gray)")),
    };
    if frame.width() != w || frame.height() != h || frame.format() != PixelFormat::Bgr8 {
        *frame = Frame::new(w, h, PixelFormat::Bgr8).map_err(|e| e.to_string())?;
    }
    let row = w * 3;
    let stride = frame.stride();
    let dst = frame.data_mut();
    for y in 0..h {
        let line = src.at_row::<opencv::core::Vec3b>(y as i32).map_err(|e| e.message)?;
        // SAFETY: `line` is `w` contiguous Vec3b (3 bytes each, no padding) of row `y` of a valid Mat.
        let bytes = unsafe { std::slice::from_raw_parts(line.as_ptr() as *const u8, row) };
        dst[y * stride..y * stride + row].copy_from_slice(bytes);
    }
    Ok(())
}

/// Reads an image file (PNG, JPEG, …) as a BGR frame.
pub fn read_image(path: &Path) -> Result<Frame, VideoError> {
    let err = |reason: String| VideoError::Image { path: path.to_path_buf(), reason };
    if !path.exists() {
        return Err(err("no such file".into()));
    }
    let s = path.to_str().ok_or_else(|| err("the path is not UTF-8".into()))?;
    let mat = opencv::imgcodecs::imread(s, opencv::imgcodecs::IMREAD_COLOR).map_err(|e| err(e.message))?;
    if mat.empty() {
        return Err(err("not an image OpenCV can decode (unreadable or unknown format)".into()));
    }
    let mut frame = Frame::new(1, 1, PixelFormat::Bgr8).map_err(|e| err(e.to_string()))?;
    copy_into(&mat, &mut frame).map_err(err)?;
    Ok(frame)
}

/// Writes a frame to an image file; the format follows the extension.
pub fn write_image(path: &Path, frame: FrameRef<'_>) -> Result<(), VideoError> {
    let err = |reason: String| VideoError::Image { path: path.to_path_buf(), reason };
    let s = path.to_str().ok_or_else(|| err("the path is not UTF-8".into()))?;
    let mat = crate::sink::mat_view(frame).map_err(err)?;
    match opencv::imgcodecs::imwrite(s, &*mat, &opencv::core::Vector::new()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(err("OpenCV could not write it (unknown extension?)".into())),
        Err(e) => Err(err(e.message)),
    }
}
