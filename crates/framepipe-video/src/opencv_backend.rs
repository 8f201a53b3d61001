//! The OpenCV backend (feature `opencv`): `cv::VideoCapture` for GStreamer pipelines, RTSP and
//! every codec OpenCV/FFmpeg reads, decoding straight into the pooled frame's buffer.

use std::ffi::c_void;
use std::path::Path;
use std::time::Duration;

use framepipe_vision::{Frame, PixelFormat};
use opencv::core::{Mat, MatTraitConst, MatTraitConstManual, Vector, CV_8UC1, CV_8UC3};
use opencv::prelude::{VideoCaptureTrait, VideoCaptureTraitConst};
use opencv::videoio::{self, VideoCapture};

use crate::backend::{FrameReader, ReadOutcome};
use crate::{OpenOptions, SourceSpec, VideoError};

/// An OpenCV capture.
pub(crate) struct OpenCvReader {
    cap: VideoCapture,
    description: String,
    fps: Option<f64>,
    frames: Option<u64>,
}

// SAFETY: a `VideoCapture` is used by one thread at a time (the reader is moved, never shared);
// OpenCV's capture objects hold no thread-affine state.
unsafe impl Send for OpenCvReader {}

/// OpenCV open parameters for the network time limits (pairs of property and milliseconds).
fn params(options: &OpenOptions) -> Vector<i32> {
    let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128) as i32;
    let mut v = Vector::new();
    if let Some(d) = options.open_timeout {
        v.push(videoio::CAP_PROP_OPEN_TIMEOUT_MSEC);
        v.push(ms(d));
    }
    if let Some(d) = options.read_timeout {
        v.push(videoio::CAP_PROP_READ_TIMEOUT_MSEC);
        v.push(ms(d));
    }
    v
}

impl OpenCvReader {
    /// Opens `spec` with OpenCV.
    pub(crate) fn open(spec: &SourceSpec, options: &OpenOptions) -> Result<Self, VideoError> {
        let name = spec.to_string();
        let open_err = |reason: String| VideoError::Open { source_name: name.clone(), reason };
        let cap = match spec {
            SourceSpec::File(p) => {
                let s = p.to_str().ok_or_else(|| open_err("the path is not UTF-8".into()))?;
                VideoCapture::from_file(s, videoio::CAP_FFMPEG)
            }
            SourceSpec::Url(u) => VideoCapture::from_file_with_params(u, videoio::CAP_FFMPEG, &params(options)),
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
        Ok(OpenCvReader { cap, description: format!("opencv ({backend})"), fps, frames })
    }

    /// Frames per second and frame count the capture announced.
    pub(crate) fn announced(&self) -> (Option<f64>, Option<u64>) {
        (self.fps, self.frames)
    }

    /// Decodes the next frame straight into `frame`'s buffer (a copy only when OpenCV gives a
    /// different size or type).
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
            // OpenCV reallocated (another size or type): copy what it decoded.
            copy_into(&mat, frame)?;
        }
        Ok(true)
    }

    /// The capture's position (timestamp of the last frame read), if it is a plausible time.
    /// Backends without timestamps report garbage (FFmpeg's MJPEG-over-HTTP demuxer: about -3.7e20 ms).
    fn position(&self) -> Option<Duration> {
        let ms = self.cap.get(videoio::CAP_PROP_POS_MSEC).ok()?;
        (ms.is_finite() && (0.0..1e13).contains(&ms)).then(|| Duration::from_secs_f64(ms / 1e3))
    }
}

impl FrameReader for OpenCvReader {
    fn read_into(&mut self, frame: &mut Frame) -> ReadOutcome {
        match self.decode_into(frame) {
            Ok(true) => ReadOutcome::Frame { pts: self.position() },
            Ok(false) => ReadOutcome::End,
            Err(reason) => ReadOutcome::Failed { reason, io: None },
        }
    }

    fn describe(&self) -> &str {
        &self.description
    }
}

/// Copies (converting gray to BGR) a decoded image into a frame, resizing the frame if needed.
fn copy_into(mat: &Mat, frame: &mut Frame) -> Result<(), String> {
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
    crate::frames::fit(frame, w, h)?;
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

/// Reads an image with OpenCV (every format `imread` knows).
pub(crate) fn read_image(path: &Path) -> Result<Frame, String> {
    let s = path.to_str().ok_or("the path is not UTF-8")?;
    let mat = opencv::imgcodecs::imread(s, opencv::imgcodecs::IMREAD_COLOR).map_err(|e| e.message)?;
    if mat.empty() {
        return Err("not an image OpenCV can decode".into());
    }
    let mut frame = Frame::new(1, 1, PixelFormat::Bgr8).map_err(|e| e.to_string())?;
    copy_into(&mat, &mut frame)?;
    Ok(frame)
}

/// Quiets OpenCV's own console logging to errors only.
pub(crate) fn quiet_logs() {
    let _ = opencv::core::set_log_level(opencv::core::LogLevel::LOG_LEVEL_ERROR);
}
