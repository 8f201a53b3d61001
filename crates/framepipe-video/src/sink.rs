//! Writing frames to a video file.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use framepipe_vision::{FrameRef, PixelFormat};
use opencv::core::{Mat, Size, CV_8UC1, CV_8UC3};
use opencv::prelude::{VideoWriterTrait, VideoWriterTraitConst};
use opencv::videoio::VideoWriter;

use crate::VideoError;

/// A read-only OpenCV view of a frame's pixels, valid as long as the frame is borrowed.
pub(crate) struct MatView<'a> {
    mat: Mat,
    _frame: PhantomData<&'a [u8]>,
}

impl Deref for MatView<'_> {
    type Target = Mat;
    fn deref(&self) -> &Mat {
        &self.mat
    }
}

/// Wraps a frame as a Mat without copying. Only for reading: OpenCV functions that take it as input.
pub(crate) fn mat_view(frame: FrameRef<'_>) -> Result<MatView<'_>, String> {
    let typ = match frame.format() {
        PixelFormat::Bgr8 => CV_8UC3,
        PixelFormat::Gray8 => CV_8UC1,
        other => return Err(format!("{other} frames must be converted to BGR first")),
    };
    let data = frame.data();
    // SAFETY: the header describes exactly the frame's buffer (height rows of `stride` bytes, checked
    // by `FrameRef`), and `MatView` borrows the frame for as long as the header lives. The pointer is
    // cast to `*mut` only because OpenCV's constructor takes one; the view is used only as an input
    // array, which OpenCV does not write.
    let mat = unsafe {
        Mat::new_rows_cols_with_data_unsafe(
            frame.height() as i32,
            frame.width() as i32,
            typ,
            data.as_ptr() as *mut c_void,
            frame.stride(),
        )
    }
    .map_err(|e| e.message)?;
    Ok(MatView { mat, _frame: PhantomData })
}

/// Writes BGR frames to a video file (`.mp4`/`.mov`: MPEG-4 part 2; `.avi`: Motion JPEG; `.mkv`: XVID).
pub struct VideoSink {
    writer: VideoWriter,
    path: PathBuf,
    width: usize,
    height: usize,
    written: u64,
}

impl VideoSink {
    /// Creates (or overwrites) `path` for `width`×`height` frames at `fps`.
    pub fn create(path: &Path, fps: f64, width: usize, height: usize) -> Result<Self, VideoError> {
        let err = |reason: String| VideoError::Write { path: path.to_path_buf(), reason };
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let code = match ext.as_str() {
            "mp4" | "mov" | "m4v" => ['m', 'p', '4', 'v'],
            "avi" => ['M', 'J', 'P', 'G'],
            "mkv" => ['X', 'V', 'I', 'D'],
            other => return Err(err(format!("unknown video extension `.{other}` (use .mp4, .avi or .mkv)"))),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let fourcc = VideoWriter::fourcc(code[0], code[1], code[2], code[3]).map_err(|e| err(e.message))?;
        let s = path.to_str().ok_or_else(|| err("the path is not UTF-8".into()))?;
        let fps = if fps.is_finite() && fps > 0.0 { fps } else { 30.0 };
        let writer = VideoWriter::new(s, fourcc, fps, Size::new(width as i32, height as i32), true)
            .map_err(|e| err(e.message))?;
        if !writer.is_opened().unwrap_or(false) {
            return Err(err("OpenCV could not open a writer for it".into()));
        }
        Ok(VideoSink { writer, path: path.to_path_buf(), width, height, written: 0 })
    }

    /// Appends one frame; it must have the size the sink was created with.
    pub fn write(&mut self, frame: FrameRef<'_>) -> Result<(), VideoError> {
        let err = |reason: String| VideoError::Write { path: self.path.clone(), reason };
        if frame.width() != self.width || frame.height() != self.height {
            return Err(err(format!(
                "frame is {}x{}, the video is {}x{}",
                frame.width(),
                frame.height(),
                self.width,
                self.height
            )));
        }
        let mat = mat_view(frame).map_err(err)?;
        self.writer.write(&*mat).map_err(|e| err(e.message))?;
        self.written += 1;
        Ok(())
    }

    /// Frames written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Finishes the file.
    pub fn finish(mut self) -> Result<u64, VideoError> {
        self.writer.release().map_err(|e| VideoError::Write { path: self.path.clone(), reason: e.message })?;
        Ok(self.written)
    }
}
