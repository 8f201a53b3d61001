//! Letterbox geometry, coordinate round trips and pixel values.

use framepipe_vision::{
    BBox, ChannelOrder, Frame, FrameRef, LetterboxParams, LetterboxStyle, Normalization, PixelFormat, PreprocessConfig,
    Preprocessor, VisionError,
};

fn cfg640() -> PreprocessConfig {
    PreprocessConfig::new(640, 640)
}

/// (new_w, new_h, pad_x, pad_y) for a frame under a config.
fn geom(w: usize, h: usize, cfg: &PreprocessConfig) -> (usize, usize, f32, f32) {
    let p = LetterboxParams::compute(w, h, cfg).unwrap();
    (p.new_w, p.new_h, p.pad_x, p.pad_y)
}

#[test]
fn ultralytics_geometry_1920x1080() {
    let p = LetterboxParams::compute(1920, 1080, &cfg640()).unwrap();
    // r = min(640/1080, 640/1920) = 1/3; new_unpad = (640, 360); dh = 280 → 140 / 140.
    assert_eq!((p.new_w, p.new_h), (640, 360));
    assert_eq!((p.pad_x, p.pad_y), (0.0, 140.0));
    assert!((p.scale - 1.0 / 3.0).abs() < 1e-7);
    assert!((p.scale_x - 1.0 / 3.0).abs() < 1e-7);
    assert!((p.scale_y - 1.0 / 3.0).abs() < 1e-7);
    assert_eq!((p.src_w, p.src_h, p.dst_w, p.dst_h), (1920, 1080, 640, 640));
}

#[test]
fn ultralytics_geometry_by_hand() {
    let c = cfg640();
    // 1280x720: r = 0.5 → 640x360, pad 140.
    assert_eq!(geom(1280, 720, &c), (640, 360, 0.0, 140.0));
    // 480x640 portrait: r = 1 → 480x640, dw = 160 → pad_x 80.
    assert_eq!(geom(480, 640, &c), (480, 640, 80.0, 0.0));
    // 1x1: r = 640 → fills the input.
    assert_eq!(geom(1, 1, &c), (640, 640, 0.0, 0.0));
    // 4000x3: r = 0.16, round(0.48) = 0 → clamped to 1 row; dh = 639 → top 319 (bottom 320).
    assert_eq!(geom(4000, 3, &c), (640, 1, 0.0, 319.0));
    // 3x4000: the same, transposed.
    assert_eq!(geom(3, 4000, &c), (1, 640, 319.0, 0.0));
    // 1000x999: r = 0.64, 999 * 0.64 = 639.36 → 639; dh = 1 → top round(0.5 - 0.1) = 0.
    assert_eq!(geom(1000, 999, &c), (640, 639, 0.0, 0.0));
    // Python rounds half to even: 721 * 0.5 = 360.5 → 360, 723 * 0.5 = 361.5 → 362.
    assert_eq!(geom(1280, 721, &c), (640, 360, 0.0, 140.0));
    assert_eq!(geom(1280, 723, &c), (640, 362, 0.0, 139.0));
    // Non-square input: 1920x1080 into 640x384 → r = min(1/3, 0.3556) → 640x360, pad 12.
    assert_eq!(geom(1920, 1080, &PreprocessConfig::new(640, 384)), (640, 360, 0.0, 12.0));
    // Odd padding goes right/bottom: 1920x1080 into 640x363 → dh = 3 → top 1.
    assert_eq!(geom(1920, 1080, &PreprocessConfig::new(640, 363)), (640, 360, 0.0, 1.0));
}

#[test]
fn other_styles_geometry() {
    // No scale-up: a 320x240 frame stays 320x240, centred: pads 160 and 200.
    let c = cfg640().with_scale_up(false);
    assert_eq!(geom(320, 240, &c), (320, 240, 160.0, 200.0));
    assert_eq!(geom(1920, 1080, &c), (640, 360, 0.0, 140.0));
    // YOLOX: floor, top-left. 1000x999 → r = 0.64 → 640 x floor(639.36) = 639, no top pad.
    let c = cfg640().with_style(LetterboxStyle::Yolox);
    assert_eq!(geom(1000, 999, &c), (640, 639, 0.0, 0.0));
    assert_eq!(geom(1920, 1080, &c), (640, 360, 0.0, 0.0));
    // Stretch: fills the input, per-axis scale.
    let c = cfg640().with_style(LetterboxStyle::Stretch);
    let p = LetterboxParams::compute(1920, 1080, &c).unwrap();
    assert_eq!((p.new_w, p.new_h, p.pad_x, p.pad_y), (640, 640, 0.0, 0.0));
    assert!((p.scale_x - 1.0 / 3.0).abs() < 1e-7);
    assert!((p.scale_y - 640.0 / 1080.0).abs() < 1e-7);
}

#[test]
fn frame_corners_land_on_the_image_edges() {
    for (w, h) in [(1920, 1080), (480, 640), (4000, 3), (3, 4000), (1, 1), (1000, 999)] {
        let p = LetterboxParams::compute(w, h, &cfg640()).unwrap();
        assert_eq!(p.to_input(0.0, 0.0), (p.pad_x, p.pad_y), "{w}x{h}");
        let (x, y) = p.to_input(w as f32, h as f32);
        assert!((x - (p.pad_x + p.new_w as f32)).abs() < 1e-3, "{w}x{h}: {x}");
        assert!((y - (p.pad_y + p.new_h as f32)).abs() < 1e-3, "{w}x{h}: {y}");
    }
}

#[test]
fn coordinates_round_trip_within_a_pixel() {
    let sizes =
        [(1920, 1080), (1280, 720), (480, 640), (1, 1), (4000, 3), (3, 4000), (640, 640), (1000, 999), (333, 777)];
    for style in [LetterboxStyle::Ultralytics, LetterboxStyle::Yolox, LetterboxStyle::Stretch] {
        let cfg = cfg640().with_style(style);
        for (w, h) in sizes {
            let p = LetterboxParams::compute(w, h, &cfg).unwrap();
            for i in 0..=20 {
                for j in 0..=20 {
                    let x = w as f32 * i as f32 / 20.0;
                    let y = h as f32 * j as f32 / 20.0;
                    let (ix, iy) = p.to_input(x, y);
                    let inside = -1e-3..=640.001;
                    assert!(inside.contains(&ix) && inside.contains(&iy), "({ix},{iy})");
                    let (fx, fy) = p.to_frame(ix, iy);
                    assert!(
                        (fx - x).abs() < 1.0 && (fy - y).abs() < 1.0,
                        "{style:?} {w}x{h}: ({x},{y}) → ({ix},{iy}) → ({fx},{fy})"
                    );
                    // In fact it is exact up to f32 rounding.
                    assert!((fx - x).abs() <= 1e-3 * (1.0 + x.abs()), "{fx} vs {x}");
                    assert!((fy - y).abs() <= 1e-3 * (1.0 + y.abs()), "{fy} vs {y}");
                }
            }
            // Boxes too, and mapping back clips to the frame.
            let b = BBox::new(w as f32 * 0.1, h as f32 * 0.2, w as f32 * 0.7, h as f32 * 0.9);
            let back = p.map_box_to_frame(p.map_box_to_input(b));
            for (a, e) in [(back.x1, b.x1), (back.y1, b.y1), (back.x2, b.x2), (back.y2, b.y2)] {
                assert!((a - e).abs() < 1.0, "{style:?} {w}x{h}: {back:?} vs {b:?}");
            }
        }
    }
}

#[test]
fn map_box_to_frame_clips_into_the_padding() {
    let p = LetterboxParams::compute(1920, 1080, &cfg640()).unwrap();
    // A box covering the whole input, bars included → the whole frame.
    let b = p.map_box_to_frame(BBox::new(-5.0, 0.0, 700.0, 640.0));
    assert_eq!(b, BBox::new(0.0, 0.0, 1920.0, 1080.0));
    // Input (100, 200)-(300, 400) → frame ((100)*3, (200-140)*3)-((300)*3, (400-140)*3).
    let b = p.map_box_to_frame(BBox::new(100.0, 200.0, 300.0, 400.0));
    assert_eq!(b, BBox::new(300.0, 180.0, 900.0, 780.0));
}

fn solid(w: usize, h: usize, format: PixelFormat, px: &[u8]) -> Frame {
    let mut f = Frame::new(w, h, format).unwrap();
    for p in f.data_mut().chunks_exact_mut(format.channels()) {
        p.copy_from_slice(px);
    }
    f
}

/// Splits an NCHW output into (plane, x, y) accessors.
fn at(out: &[f32], dw: usize, dh: usize, c: usize, x: usize, y: usize) -> f32 {
    out[c * dw * dh + y * dw + x]
}

#[test]
fn solid_colour_is_exact_in_image_and_padding() {
    // BGR pixel (b=10, g=100, r=200) → RGB planes 200/255, 100/255, 10/255 exactly;
    // padding 114/255 exactly (NumPy `im / 255` semantics).
    let sizes = [(1920, 1080), (1600, 900), (480, 640), (1, 1), (4000, 3), (3, 4000), (37, 23), (1000, 999)];
    let mut pre = Preprocessor::new(PreprocessConfig::new(64, 48)).unwrap();
    let mut out = vec![0.0f32; pre.output_len()];
    for (w, h) in sizes {
        let f = solid(w, h, PixelFormat::Bgr8, &[10, 100, 200]);
        let p = pre.preprocess(f.as_ref(), &mut out).unwrap();
        let (px, py) = (p.pad_x as usize, p.pad_y as usize);
        let expect = [200.0f32 / 255.0, 100.0 / 255.0, 10.0 / 255.0];
        for y in 0..48 {
            for x in 0..64 {
                let inside = x >= px && x < px + p.new_w && y >= py && y < py + p.new_h;
                for (c, &e) in expect.iter().enumerate() {
                    let v = at(&out, 64, 48, c, x, y);
                    let want = if inside { e } else { 114.0 / 255.0 };
                    assert_eq!(v, want, "{w}x{h} plane {c} at ({x},{y}) inside={inside}");
                }
            }
        }
    }
}

#[test]
fn bright_pixel_at_integer_downscale_lands_on_sampled_centre() {
    // 1920x1080 → 640x360 is an exact 3x downscale. INTER_LINEAR maps output
    // column dx to source x = (dx + 0.5) * 3 - 0.5 = 3 dx + 1 with weight 0, so
    // only pixels (3k+1, 3m+1) are sampled.
    let mut f = Frame::new(1920, 1080, PixelFormat::Bgr8).unwrap();
    f.data_mut()[(541 * 1920 + 961) * 3..][..3].copy_from_slice(&[255, 255, 255]);
    f.data_mut()[(540 * 1920 + 960) * 3..][..3].copy_from_slice(&[255, 255, 255]); // not sampled
    let mut pre = Preprocessor::new(cfg640()).unwrap();
    let mut out = vec![0.0f32; pre.output_len()];
    pre.preprocess(f.as_ref(), &mut out).unwrap();
    // (961, 541) → dx = 320, dy = 180 → input (320, 140 + 180).
    let mut lit = Vec::new();
    for y in 140..500 {
        for x in 0..640 {
            if at(&out, 640, 640, 0, x, y) != 0.0 {
                lit.push((x, y, at(&out, 640, 640, 0, x, y)));
            }
        }
    }
    assert_eq!(lit, [(320, 320, 1.0)]);
}

#[test]
fn bright_pixel_at_fractional_downscale_gets_bilinear_weight() {
    // 1600x900 → 640x360 (2.5x). Source x = (dx + 0.5) * 2.5 - 0.5 = 2.5 dx + 0.75.
    // Pixel 800 is only reached by dx = 320: x = 800.75 → 0.25 * p[800] + 0.75 * p[801].
    // Same for y = 450 from dy = 180. Output (320, 140 + 180) = 0.25 * 0.25 = 0.0625.
    let mut f = Frame::new(1600, 900, PixelFormat::Rgb8).unwrap();
    f.data_mut()[(450 * 1600 + 800) * 3..][..3].copy_from_slice(&[255, 255, 255]);
    let mut pre = Preprocessor::new(cfg640()).unwrap();
    let mut out = vec![0.0f32; pre.output_len()];
    let p = pre.preprocess(f.as_ref(), &mut out).unwrap();
    assert_eq!((p.new_w, p.new_h, p.pad_y), (640, 360, 140.0));
    let mut lit = Vec::new();
    for y in 140..500 {
        for x in 0..640 {
            let v = at(&out, 640, 640, 1, x, y);
            if v != 0.0 {
                lit.push((x, y, v));
            }
        }
    }
    assert_eq!(lit.len(), 1, "{lit:?}");
    let (x, y, v) = lit[0];
    assert_eq!((x, y), (320, 320));
    assert!((v - 0.0625).abs() < 1e-6, "{v}");
}

/// Straightforward reference: per output pixel, OpenCV INTER_LINEAR source
/// coordinates in f64, 2-D bilinear on the frame, then `(v - mean) / std`.
fn reference(frame: FrameRef<'_>, cfg: &PreprocessConfig) -> Vec<f32> {
    let p = LetterboxParams::compute(frame.width(), frame.height(), cfg).unwrap();
    let (dw, dh) = (cfg.input_width, cfg.input_height);
    let mut out = vec![0.0f32; 3 * dw * dh];
    // which source channel feeds output plane c
    let src_c = |c: usize| -> usize {
        match (frame.format(), cfg.channel_order) {
            (PixelFormat::Gray8, _) => 0,
            (PixelFormat::Bgr8, ChannelOrder::Rgb) | (PixelFormat::Rgb8, ChannelOrder::Bgr) => 2 - c,
            _ => c,
        }
    };
    let axis = |d: usize, src: usize, dst: usize| -> (usize, usize, f64) {
        let s = (d as f64 + 0.5) * (src as f64 / dst as f64) - 0.5;
        if s <= 0.0 {
            return (0, 0, 0.0);
        }
        let i = s.floor() as usize;
        if i >= src - 1 {
            return (src - 1, src - 1, 0.0);
        }
        (i, i + 1, s - i as f64)
    };
    for c in 0..3 {
        for y in 0..dh {
            for x in 0..dw {
                let ix = x as isize - p.pad_x as isize;
                let iy = y as isize - p.pad_y as isize;
                let v = if ix < 0 || iy < 0 || ix as usize >= p.new_w || iy as usize >= p.new_h {
                    f64::from(cfg.pad_value)
                } else {
                    let (x0, x1, fx) = axis(ix as usize, frame.width(), p.new_w);
                    let (y0, y1, fy) = axis(iy as usize, frame.height(), p.new_h);
                    let g = |xx: usize, yy: usize| f64::from(frame.pixel(xx, yy).unwrap()[src_c(c)]);
                    let top = g(x0, y0) * (1.0 - fx) + g(x1, y0) * fx;
                    let bot = g(x0, y1) * (1.0 - fx) + g(x1, y1) * fx;
                    top * (1.0 - fy) + bot * fy
                };
                let n = &cfg.normalization;
                out[c * dw * dh + y * dw + x] = ((v - f64::from(n.mean[c])) / f64::from(n.std[c])) as f32;
            }
        }
    }
    out
}

/// A deterministic pseudo-random frame with row padding (stride > width * channels).
fn noise_frame(w: usize, h: usize, format: PixelFormat, seed: u32) -> (Vec<u8>, usize) {
    let stride = w * format.channels() + 5;
    let mut s = seed;
    let data = (0..stride * h)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (s >> 16) as u8
        })
        .collect();
    (data, stride)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn bilinear_matches_reference_implementation() {
    // Sizes chosen to hit every internal path (see the `paths` unit test in
    // letterbox.rs): general, nearest, half-weight sums with and without pairs.
    let sizes =
        [(100, 77), (37, 23), (64, 48), (640, 360), (333, 200), (1, 1), (200, 3), (2, 300), (192, 128), (128, 192)];
    let formats = [PixelFormat::Bgr8, PixelFormat::Rgb8, PixelFormat::Gray8];
    let configs = [
        PreprocessConfig::new(64, 48),
        PreprocessConfig::new(48, 64).with_channel_order(ChannelOrder::Bgr),
        PreprocessConfig::new(64, 64).with_style(LetterboxStyle::Stretch),
        PreprocessConfig::new(50, 40)
            .with_style(LetterboxStyle::Yolox)
            .with_normalization(Normalization::RAW)
            .with_pad_value(0),
        PreprocessConfig::new(32, 32)
            .with_normalization(Normalization::from_unit_mean_std([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])),
    ];
    let mut seed = 1;
    for cfg in configs {
        let mut pre = Preprocessor::new(cfg).unwrap();
        let mut out = vec![0.0f32; pre.output_len()];
        for &(w, h) in &sizes {
            for format in formats {
                seed += 1;
                let (data, stride) = noise_frame(w, h, format, seed);
                let f = FrameRef::new(w, h, stride, format, &data).unwrap();
                pre.preprocess(f, &mut out).unwrap();
                let want = reference(f, &cfg);
                // 1e-4 on the /255 scale; RAW and mean/std scales are larger, so compare relative.
                let scale = cfg.normalization.std[0].min(cfg.normalization.std[2]) / 255.0;
                let d = max_abs_diff(&out, &want) * scale;
                assert!(d < 1e-4, "{cfg:?} {w}x{h} {format}: max diff {d}");
            }
        }
    }
}

#[test]
fn gray_is_replicated_and_channel_orders_swap() {
    let (data, stride) = noise_frame(90, 70, PixelFormat::Bgr8, 99);
    let bgr = FrameRef::new(90, 70, stride, PixelFormat::Bgr8, &data).unwrap();
    // The same bytes read as RGB: planes come out reversed.
    let rgb = FrameRef::new(90, 70, stride, PixelFormat::Rgb8, &data).unwrap();
    let mut pre = Preprocessor::new(PreprocessConfig::new(32, 32)).unwrap();
    let n = pre.output_len();
    let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
    pre.preprocess(bgr, &mut a).unwrap();
    pre.preprocess(rgb, &mut b).unwrap();
    let plane = 32 * 32;
    assert_eq!(a[..plane], b[2 * plane..]);
    assert_eq!(a[plane..2 * plane], b[plane..2 * plane]);
    assert_eq!(a[2 * plane..], b[..plane]);
    assert_ne!(a[..plane], a[2 * plane..]);

    let gray = solid(10, 10, PixelFormat::Gray8, &[51]);
    pre.preprocess(gray.as_ref(), &mut a).unwrap();
    // 51 / 255 = 0.2 in all three planes of the image area (10x10 → 32x32, no padding).
    assert!(a.iter().all(|&v| v == 51.0 / 255.0));
}

#[test]
fn cached_tables_follow_size_and_format_changes() {
    let cfg = PreprocessConfig::new(40, 30);
    let frames: Vec<(Vec<u8>, usize, usize, usize, PixelFormat)> = [
        (100, 60, PixelFormat::Bgr8),
        (61, 97, PixelFormat::Bgr8),
        (100, 60, PixelFormat::Gray8),
        (100, 60, PixelFormat::Bgr8),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(w, h, f))| {
        let (d, s) = noise_frame(w, h, f, 7 + i as u32);
        (d, s, w, h, f)
    })
    .collect();
    let mut reused = Preprocessor::new(cfg).unwrap();
    for (d, s, w, h, f) in &frames {
        let fr = FrameRef::new(*w, *h, *s, *f, d).unwrap();
        let mut a = vec![0.0; reused.output_len()];
        let mut b = vec![0.0; reused.output_len()];
        let pa = reused.preprocess(fr, &mut a).unwrap();
        let pb = Preprocessor::new(cfg).unwrap().preprocess(fr, &mut b).unwrap();
        assert_eq!(pa, pb);
        assert_eq!(a, b, "{w}x{h} {f}");
    }
}

#[test]
fn output_length_and_config_errors_are_clear() {
    let mut pre = Preprocessor::new(cfg640()).unwrap();
    let f = Frame::new(8, 8, PixelFormat::Bgr8).unwrap();
    let mut small = vec![0.0f32; 5];
    let err = pre.preprocess(f.as_ref(), &mut small).unwrap_err();
    assert!(matches!(err, VisionError::OutputSize { need: 1_228_800, got: 5, .. }));
    assert_eq!(err.to_string(), "output tensor has wrong length: need 1228800 f32 values (3x640x640 NCHW), got 5");
    let mut v = Vec::new();
    pre.preprocess_into_vec(f.as_ref(), &mut v).unwrap();
    assert_eq!(v.len(), 1_228_800);

    let err = Preprocessor::new(PreprocessConfig::new(0, 640)).unwrap_err();
    assert!(matches!(err, VisionError::ZeroSize { width: 0, height: 640 }));
    let bad_norm = Normalization { mean: [0.0; 3], std: [255.0, 0.0, 255.0] };
    let err = Preprocessor::new(cfg640().with_normalization(bad_norm)).unwrap_err();
    assert!(err.to_string().contains("plane 1"), "{err}");
    assert!(LetterboxParams::compute(0, 5, &cfg640()).is_err());
}

#[test]
fn from_scale_normalization_matches_multiplication() {
    let f = solid(4, 4, PixelFormat::Gray8, &[200]);
    let cfg = PreprocessConfig::new(4, 4).with_normalization(Normalization::from_scale(0.5));
    let mut pre = Preprocessor::new(cfg).unwrap();
    let mut out = vec![0.0; pre.output_len()];
    pre.preprocess(f.as_ref(), &mut out).unwrap();
    assert!(out.iter().all(|&v| v == 100.0));
}
