//! Our fused letterbox against the Ultralytics recipe done with OpenCV:
//! `cv2.resize(INTER_LINEAR)` → `copyMakeBorder(114)` → BGR→RGB → `/ 255`.
//!
//! OpenCV's 8-bit INTER_LINEAR uses 11-bit fixed-point weights and rounds to
//! `u8`, while we interpolate in `f32`; the two must agree within one `u8`
//! step (1/255). Built with `--features opencv` (it links the system's OpenCV).
#![cfg(feature = "opencv")]

use framepipe_vision::{FrameRef, LetterboxParams, PixelFormat, PreprocessConfig, Preprocessor};
use opencv::core::{self as cvcore, Mat, Scalar, Size, Vec3b};
use opencv::imgproc;
use opencv::prelude::*;

fn noise(w: usize, h: usize, seed: u32) -> Vec<u8> {
    let mut s = seed;
    (0..w * h * 3)
        .map(|i| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            // mix noise with a gradient so both smooth and sharp content is covered
            let n = (s >> 16) as u8;
            if (i / 3 / w) % 2 == 0 {
                n
            } else {
                ((i / 3) % w * 255 / w) as u8
            }
        })
        .collect()
}

fn ultralytics_opencv(img: &[u8], w: usize, h: usize, p: &LetterboxParams) -> Vec<f32> {
    let src = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, img).unwrap();
    let mut resized = Mat::default();
    if (p.new_w, p.new_h) != (w, h) {
        imgproc::resize(&src, &mut resized, Size::new(p.new_w as i32, p.new_h as i32), 0.0, 0.0, imgproc::INTER_LINEAR)
            .unwrap();
    } else {
        src.copy_to(&mut resized).unwrap();
    }
    let (top, left) = (p.pad_y as i32, p.pad_x as i32);
    let bottom = (p.dst_h - p.new_h) as i32 - top;
    let right = (p.dst_w - p.new_w) as i32 - left;
    let mut padded = Mat::default();
    cvcore::copy_make_border(
        &resized,
        &mut padded,
        top,
        bottom,
        left,
        right,
        cvcore::BORDER_CONSTANT,
        Scalar::all(114.0),
    )
    .unwrap();
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(&padded, &mut rgb, imgproc::COLOR_BGR2RGB).unwrap();
    let bytes = rgb.data_bytes().unwrap();
    let plane = p.dst_w * p.dst_h;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in bytes.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(px[c]) / 255.0;
        }
    }
    out
}

#[test]
fn matches_opencv_within_one_u8_step() {
    let sizes = [
        (1920, 1080, 640, 640), // exact 3x
        (1600, 900, 640, 640),  // 2.5x
        (1280, 720, 640, 640),  // exact 2x (OpenCV switches to INTER_AREA, same result)
        (1366, 768, 640, 640),  // odd ratio
        (480, 640, 640, 640),   // portrait, no resize, pad left/right
        (333, 251, 640, 640),   // upscale
        (1920, 1080, 320, 256), // non-square input
    ];
    for (i, (w, h, dw, dh)) in sizes.into_iter().enumerate() {
        let img = noise(w, h, 17 + i as u32);
        let cfg = PreprocessConfig::new(dw, dh);
        let mut pre = Preprocessor::new(cfg).unwrap();
        let mut ours = vec![0.0f32; pre.output_len()];
        let frame = FrameRef::new(w, h, w * 3, PixelFormat::Bgr8, &img).unwrap();
        let p = pre.preprocess(frame, &mut ours).unwrap();
        let want = ultralytics_opencv(&img, w, h, &p);
        let mut worst = 0.0f32;
        let mut sum = 0.0f64;
        for (a, b) in ours.iter().zip(&want) {
            let d = (a - b).abs();
            worst = worst.max(d);
            sum += f64::from(d);
        }
        let mean = sum / ours.len() as f64;
        assert!(worst <= 1.0 / 255.0 + 1e-6, "{w}x{h}→{dw}x{dh}: max diff {} u8 steps", worst * 255.0);
        // On average far below one step (OpenCV rounds, we do not).
        assert!(mean * 255.0 < 0.3, "{w}x{h}: mean diff {} steps", mean * 255.0);
    }
}
