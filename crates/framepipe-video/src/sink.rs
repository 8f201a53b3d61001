//! Writing frames to a video file, natively: H.264 in MP4, Motion-JPEG in AVI.

use std::path::{Path, PathBuf};

use framepipe_vision::FrameRef;

use crate::native::writer::{H264Mp4, MjpegAvi, NativeWriter};
use crate::VideoError;

/// Writes BGR frames to a video file: `.mp4`/`.mov`/`.m4v` as H.264 (OpenH264, Constrained
/// Baseline), `.avi` as Motion-JPEG.
pub struct VideoSink {
    writer: Option<NativeWriter>,
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
        if !matches!(ext.as_str(), "mp4" | "mov" | "m4v" | "avi") {
            return Err(err(format!("unknown video extension `.{ext}` (use .mp4 or .avi)")));
        }
        if width == 0 || height == 0 {
            return Err(err(format!("a {width}x{height} video")));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let file = std::fs::File::create(path).map_err(|e| err(e.to_string()))?;
        let writer = match ext.as_str() {
            "avi" => NativeWriter::Avi(MjpegAvi::create(file, fps, width, height).map_err(err)?),
            _ => NativeWriter::Mp4(Box::new(H264Mp4::create(file, fps, width, height).map_err(err)?)),
        };
        Ok(VideoSink { writer: Some(writer), path: path.to_path_buf(), width, height, written: 0 })
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
        let w = self.writer.as_mut().ok_or_else(|| err("the sink is finished".into()))?;
        w.write(frame).map_err(err)?;
        self.written += 1;
        Ok(())
    }

    /// Frames written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Finishes the file.
    pub fn finish(mut self) -> Result<u64, VideoError> {
        if let Some(w) = self.writer.take() {
            w.finish().map_err(|reason| VideoError::Write { path: self.path.clone(), reason })?;
        }
        Ok(self.written)
    }
}

impl Drop for VideoSink {
    /// A sink dropped without [`finish`](VideoSink::finish) still closes its file properly.
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.finish();
        }
    }
}
