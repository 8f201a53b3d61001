//! The project's sample video: people in motion, made from public-domain photos.
//!
//! Two photos of people (by default scikit-image's `astronaut.png`, NASA, public domain, and
//! `camera.png`, CC0) pan and zoom over a dark background, one on each half of the frame. The video is
//! a pure function of the photos and the [`SampleSpec`]: every run writes the same frames.

use std::path::{Path, PathBuf};

use framepipe_vision::{Frame, PixelFormat};

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

/// Draws `img` scaled by `s` with its top-left corner at (`x0`, `y0`) onto `canvas`, bilinearly
/// (OpenCV's `warpAffine` with `INTER_LINEAR` and a transparent border: canvas pixels outside the
/// photo are left as they are).
fn draw_scaled(canvas: &mut Frame, img: &Frame, s: f64, x0: f64, y0: f64) {
    let (cw, ch) = (canvas.width() as i64, canvas.height() as i64);
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    let left = (x0.floor() as i64).clamp(0, cw);
    let right = ((x0 + s * (iw - 1.0)).ceil() as i64 + 1).clamp(0, cw);
    let top = (y0.floor() as i64).clamp(0, ch);
    let bottom = ((y0 + s * (ih - 1.0)).ceil() as i64 + 1).clamp(0, ch);
    let (istride, cstride) = (img.stride(), canvas.stride());
    let src = img.data();
    let dst = canvas.data_mut();
    for y in top..bottom {
        let sy = (y as f64 - y0) / s;
        if sy < 0.0 || sy > ih - 1.0 {
            continue;
        }
        let (y1, fy) = (sy.floor() as usize, sy - sy.floor());
        let y2 = (y1 + 1).min(ih as usize - 1);
        for x in left..right {
            let sx = (x as f64 - x0) / s;
            if sx < 0.0 || sx > iw - 1.0 {
                continue;
            }
            let (x1, fx) = (sx.floor() as usize, sx - sx.floor());
            let x2 = (x1 + 1).min(iw as usize - 1);
            for c in 0..3 {
                let p = |xx: usize, yy: usize| f64::from(src[yy * istride + xx * 3 + c]);
                let top_ = p(x1, y1) * (1.0 - fx) + p(x2, y1) * fx;
                let bot = p(x1, y2) * (1.0 - fx) + p(x2, y2) * fx;
                dst[y as usize * cstride + x as usize * 3 + c] = (top_ * (1.0 - fy) + bot * fy).round() as u8;
            }
        }
    }
}

/// Writes the sample video to `out` from `photos` (at least one). Returns the frames written.
pub fn make_sample_video(out: &Path, photos: &[PathBuf], spec: SampleSpec) -> Result<u64, VideoError> {
    if photos.is_empty() {
        return Err(VideoError::Write { path: out.to_path_buf(), reason: "no photos to make it from".into() });
    }
    let images = photos.iter().map(|p| crate::source::read_image(p)).collect::<Result<Vec<_>, _>>()?;
    let err = |reason: String| VideoError::Write { path: out.to_path_buf(), reason };
    let mut sink = VideoSink::create(out, spec.fps, spec.width, spec.height)?;
    let mut canvas = Frame::new(spec.width, spec.height, PixelFormat::Bgr8).map_err(|e| err(e.to_string()))?;
    for n in 0..spec.frames {
        let t = if spec.frames > 1 { n as f64 / (spec.frames - 1) as f64 } else { 0.0 };
        for px in canvas.data_mut().chunks_exact_mut(3) {
            px.copy_from_slice(&BACKGROUND);
        }
        for (k, img) in images.iter().enumerate().take(2) {
            let (pw, ph) = (img.width() as f64, img.height() as f64);
            let (s, cx, cy) = motion(k, t, &spec, (pw, ph));
            draw_scaled(&mut canvas, img, s, cx - s * pw / 2.0, cy - s * ph / 2.0);
        }
        sink.write(canvas.as_ref())?;
    }
    sink.finish()
}

/// The background colour (BGR).
const BACKGROUND: [u8; 3] = [38, 34, 30];
