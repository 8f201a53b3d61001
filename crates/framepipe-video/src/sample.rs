//! The project's sample video: people in motion, made from public-domain photos.
//!
//! Two photos of people (by default scikit-image's `astronaut.png`, NASA, public domain, and
//! `camera.png`, CC0) pan and zoom over a dark background, one on each half of the frame. The video is
//! a pure function of the photos and the [`SampleSpec`]: every run writes the same frames.

use std::path::{Path, PathBuf};

use opencv::core::{Mat, MatTrait, MatTraitConst, MatTraitConstManual, Scalar, Size, CV_8UC3};

use crate::{VideoError, VideoSink};

/// The sample video's geometry and length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleSpec {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Frames per second.
    pub fps: f64,
    /// Length in frames.
    pub frames: u64,
}

impl Default for SampleSpec {
    /// 1280×720 at 30 fps for 10 s.
    fn default() -> Self {
        SampleSpec { width: 1280, height: 720, fps: 30.0, frames: 300 }
    }
}

/// Where a photo sits at time `t` in [0, 1]: its scale and the frame position of its centre.
fn motion(k: usize, t: f64, spec: &SampleSpec, photo: (f64, f64)) -> (f64, f64, f64) {
    let (w, h) = (spec.width as f64, spec.height as f64);
    // Fit the photo's height to 85% of the frame, then zoom in slowly.
    let base = 0.85 * h / photo.1;
    let wave = (t * std::f64::consts::TAU).sin();
    match k % 2 {
        0 => (base * (1.0 + 0.35 * t), w * (0.25 + 0.08 * t), h * (0.5 + 0.04 * wave)),
        _ => (base * (1.15 - 0.3 * t), w * (0.77 - 0.1 * t), h * (0.5 - 0.05 * wave)),
    }
}

/// Writes the sample video to `out` from `photos` (at least one). Returns the frames written.
pub fn make_sample_video(out: &Path, photos: &[PathBuf], spec: SampleSpec) -> Result<u64, VideoError> {
    if photos.is_empty() {
        return Err(VideoError::Write { path: out.to_path_buf(), reason: "no photos to make it from".into() });
    }
    let mut images = Vec::new();
    for p in photos {
        let frame = crate::source::read_image(p)?;
        let mat = crate::sink::mat_view(frame.as_ref())
            .and_then(|m| {
                let mut owned = Mat::default();
                m.copy_to(&mut owned).map_err(|e| e.message)?;
                Ok(owned)
            })
            .map_err(|reason| VideoError::Image { path: p.clone(), reason })?;
        images.push(mat);
    }
    let err = |reason: String| VideoError::Write { path: out.to_path_buf(), reason };
    let mut sink = VideoSink::create(out, spec.fps, spec.width, spec.height)?;
    let size = Size::new(spec.width as i32, spec.height as i32);
    let mut canvas =
        Mat::new_rows_cols_with_default(size.height, size.width, CV_8UC3, Scalar::new(38.0, 34.0, 30.0, 0.0))
            .map_err(|e| err(e.message))?;
    for n in 0..spec.frames {
        let t = if spec.frames > 1 { n as f64 / (spec.frames - 1) as f64 } else { 0.0 };
        canvas.set_to_def(&Scalar::new(38.0, 34.0, 30.0, 0.0)).map_err(|e| err(e.message))?;
        for (k, img) in images.iter().enumerate().take(2) {
            let (pw, ph) = (img.cols() as f64, img.rows() as f64);
            let (s, cx, cy) = motion(k, t, &spec, (pw, ph));
            let m = Mat::from_slice_2d(&[[s, 0.0, cx - s * pw / 2.0], [0.0, s, cy - s * ph / 2.0]])
                .map_err(|e| err(e.message))?;
            opencv::imgproc::warp_affine(
                img,
                &mut canvas,
                &m,
                size,
                opencv::imgproc::INTER_LINEAR,
                opencv::core::BORDER_TRANSPARENT,
                Scalar::default(),
            )
            .map_err(|e| err(e.message))?;
        }
        let data = canvas.data_bytes().map_err(|e| err(e.message))?;
        let frame = framepipe_vision::FrameRef::new(
            spec.width,
            spec.height,
            spec.width * 3,
            framepipe_vision::PixelFormat::Bgr8,
            data,
        )
        .map_err(|e| err(e.to_string()))?;
        sink.write(frame)?;
    }
    sink.finish()
}
