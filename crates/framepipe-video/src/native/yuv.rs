//! YUV ↔ BGR conversion into and out of pooled frames.
//!
//! BT.601 with limited ("TV") range, the matrix that FFmpeg's swscale and OpenCV's `cvtColor`
//! apply by default to SD and HD H.264 and that JPEG's full-range YCbCr differs from (JPEG is
//! decoded by `zune-jpeg` itself). Integer arithmetic with 10 fractional bits, rounded:
//!
//! ```text
//! c = 1.164·(Y − 16)
//! R = c + 1.596·(V − 128)
//! G = c − 0.392·(U − 128) − 0.813·(V − 128)
//! B = c + 2.017·(U − 128)
//! ```
//!
//! Chroma is taken from the nearest sample (each U/V sample covers 2×2 pixels in 4:2:0, 2×1 in
//! 4:2:2), as OpenCV's I420 conversion does. The row loops work on fixed blocks of 16 pixels so
//! that the compiler vectorizes them; nothing is allocated.

/// Fixed-point coefficients (×1024).
const CY: i32 = 1192;
const CRV: i32 = 1634;
const CGU: i32 = 401;
const CGV: i32 = 832;
const CBU: i32 = 2066;

/// A planar 4:2:0 picture (I420) borrowed from a decoder.
#[derive(Clone, Copy, Debug)]
pub struct I420<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// The luma plane, `height` rows of `y_stride` bytes.
    pub y: &'a [u8],
    /// The Cb plane, `⌈height/2⌉` rows of `uv_stride` bytes.
    pub u: &'a [u8],
    /// The Cr plane, like `u`.
    pub v: &'a [u8],
    /// Bytes from one luma row to the next.
    pub y_stride: usize,
    /// Bytes from one chroma row to the next.
    pub uv_stride: usize,
}

impl I420<'_> {
    /// Whether the planes hold `width`×`height` pixels at their strides.
    pub fn is_valid(&self) -> bool {
        let (cw, ch) = (self.width.div_ceil(2), self.height.div_ceil(2));
        self.width > 0
            && self.height > 0
            && self.y_stride >= self.width
            && self.uv_stride >= cw
            && self.y.len() >= (self.height - 1) * self.y_stride + self.width
            && self.u.len() >= (ch - 1) * self.uv_stride + cw
            && self.v.len() >= (ch - 1) * self.uv_stride + cw
    }
}

#[inline(always)]
fn clamp(x: i32) -> u8 {
    x.clamp(0, 255) as u8
}

/// One row of BGR from one row of luma and the chroma row that covers it; `chroma(x)` gives the
/// index of pixel `x`'s U/V sample in `u`/`v`, which is `x >> shift`.
#[inline(always)]
fn row_to_bgr(y: &[u8], u: &[u8], v: &[u8], shift: u32, out: &mut [u8]) {
    let w = y.len();
    const B: usize = 16;
    let blocks = w / B;
    for k in 0..blocks {
        let x0 = k * B;
        let mut r = [0i32; B];
        let mut g = [0i32; B];
        let mut b = [0i32; B];
        for i in 0..B {
            let c = (i32::from(y[x0 + i]) - 16) * CY + 512;
            let cu = i32::from(u[(x0 + i) >> shift]) - 128;
            let cv = i32::from(v[(x0 + i) >> shift]) - 128;
            r[i] = (c + CRV * cv) >> 10;
            g[i] = (c - CGU * cu - CGV * cv) >> 10;
            b[i] = (c + CBU * cu) >> 10;
        }
        let o = &mut out[x0 * 3..(x0 + B) * 3];
        for i in 0..B {
            o[3 * i] = clamp(b[i]);
            o[3 * i + 1] = clamp(g[i]);
            o[3 * i + 2] = clamp(r[i]);
        }
    }
    for x in blocks * B..w {
        let c = (i32::from(y[x]) - 16) * CY + 512;
        let cu = i32::from(u[x >> shift]) - 128;
        let cv = i32::from(v[x >> shift]) - 128;
        out[3 * x] = clamp((c + CBU * cu) >> 10);
        out[3 * x + 1] = clamp((c - CGU * cu - CGV * cv) >> 10);
        out[3 * x + 2] = clamp((c + CRV * cv) >> 10);
    }
}

/// Converts an I420 picture into tightly or loosely packed BGR rows (`dst_stride` bytes apart).
///
/// # Panics
/// If `src` is not [valid](I420::is_valid) or `dst` holds fewer than `height` rows of `width * 3`
/// bytes at `dst_stride`.
pub fn i420_to_bgr(src: &I420<'_>, dst: &mut [u8], dst_stride: usize) {
    assert!(src.is_valid(), "the I420 planes do not hold the picture");
    assert!(dst_stride >= src.width * 3 && dst.len() >= (src.height - 1) * dst_stride + src.width * 3);
    // The SIMD kernels of `yuvutils-rs` (AVX2/SSE4.1, chosen at run time) where the sizes fit
    // them; the portable rows below otherwise (and as the reference in the tests).
    let image = yuvutils_rs::YuvPlanarImage {
        y_plane: src.y,
        y_stride: src.y_stride as u32,
        u_plane: src.u,
        u_stride: src.uv_stride as u32,
        v_plane: src.v,
        v_stride: src.uv_stride as u32,
        width: src.width as u32,
        height: src.height as u32,
    };
    let fast = u32::try_from(dst_stride).ok().is_some_and(|stride| {
        yuvutils_rs::yuv420_to_bgr(
            &image,
            dst,
            stride,
            yuvutils_rs::YuvRange::Limited,
            yuvutils_rs::YuvStandardMatrix::Bt601,
        )
        .is_ok()
    });
    if !fast {
        i420_to_bgr_rows(src, dst, dst_stride);
    }
}

/// The portable conversion (nearest chroma sample).
fn i420_to_bgr_rows(src: &I420<'_>, dst: &mut [u8], dst_stride: usize) {
    let (w, h) = (src.width, src.height);
    let cw = w.div_ceil(2);
    for row in 0..h {
        let y = &src.y[row * src.y_stride..row * src.y_stride + w];
        let c = (row / 2) * src.uv_stride;
        let (u, v) = (&src.u[c..c + cw], &src.v[c..c + cw]);
        row_to_bgr(y, u, v, 1, &mut dst[row * dst_stride..row * dst_stride + w * 3]);
    }
}

/// Converts packed YUYV 4:2:2 (`Y0 U Y1 V`, `src_stride` bytes a row) into BGR rows.
/// `scratch` holds one row's planes between calls (grown once, then reused).
pub(crate) fn yuyv_to_bgr(
    src: &[u8],
    src_stride: usize,
    width: usize,
    height: usize,
    dst: &mut [u8],
    dst_stride: usize,
    scratch: &mut Vec<u8>,
) {
    let cw = width.div_ceil(2);
    scratch.resize(width + 2 * cw, 0);
    let (y, uv) = scratch.split_at_mut(width);
    let (u, v) = uv.split_at_mut(cw);
    for row in 0..height {
        let line = &src[row * src_stride..];
        for x in 0..width {
            y[x] = line[2 * x];
        }
        for c in 0..cw {
            u[c] = line[4 * c + 1];
            v[c] = line[4 * c + 3];
        }
        row_to_bgr(y, u, v, 1, &mut dst[row * dst_stride..row * dst_stride + width * 3]);
    }
}

/// Converts BGR rows into I420 planes (`y`: `width × height`, `u`/`v`: `⌈w/2⌉ × ⌈h/2⌉`, all tight),
/// chroma averaged over each 2×2 block. The inverse of [`i420_to_bgr`] up to rounding (for the
/// H.264 encoder).
pub(crate) fn bgr_to_i420(
    src: &[u8],
    src_stride: usize,
    width: usize,
    height: usize,
    y: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
) {
    let cw = width.div_ceil(2);
    for row in 0..height {
        let line = &src[row * src_stride..row * src_stride + width * 3];
        let out = &mut y[row * width..(row + 1) * width];
        for (x, px) in line.chunks_exact(3).enumerate() {
            let (b, g, r) = (i32::from(px[0]), i32::from(px[1]), i32::from(px[2]));
            out[x] = clamp(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16);
        }
    }
    for cy in 0..height.div_ceil(2) {
        for cx in 0..cw {
            let (mut sb, mut sg, mut sr, mut n) = (0i32, 0i32, 0i32, 0i32);
            for dy in 0..2 {
                let row = (2 * cy + dy).min(height - 1);
                for dx in 0..2 {
                    let x = (2 * cx + dx).min(width - 1);
                    let p = row * src_stride + 3 * x;
                    sb += i32::from(src[p]);
                    sg += i32::from(src[p + 1]);
                    sr += i32::from(src[p + 2]);
                    n += 1;
                }
            }
            let (b, g, r) = ((sb + n / 2) / n, (sg + n / 2) / n, (sr + n / 2) / n);
            u[cy * cw + cx] = clamp(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128);
            v[cy * cw + cx] = clamp(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floating-point BT.601 limited-range formula, the reference for the fixed-point one.
    fn reference(y: u8, u: u8, v: u8) -> [u8; 3] {
        let (c, d, e) = (f64::from(y) - 16.0, f64::from(u) - 128.0, f64::from(v) - 128.0);
        let f = |x: f64| x.round().clamp(0.0, 255.0) as u8;
        [f(1.164 * c + 2.017 * d), f(1.164 * c - 0.392 * d - 0.813 * e), f(1.164 * c + 1.596 * e)]
    }

    #[test]
    fn the_fixed_point_matrix_is_within_one_of_the_formula_everywhere() {
        let mut worst = 0;
        for y in (0..=255u8).step_by(3) {
            for u in (0..=255u8).step_by(5) {
                for v in (0..=255u8).step_by(7) {
                    let mut out = [0u8; 3];
                    row_to_bgr(&[y], &[u], &[v], 1, &mut out);
                    let want = reference(y, u, v);
                    for k in 0..3 {
                        worst = worst.max((i32::from(out[k]) - i32::from(want[k])).abs());
                    }
                }
            }
        }
        assert!(worst <= 1, "worst difference {worst}");
    }

    /// Both paths (the SIMD one and the portable rows) on odd sizes with padded strides. The
    /// SIMD kernels clamp luma to the limited range first (16..=235) and round their own way: on
    /// legal values they agree with the formula within 2.
    #[test]
    fn blocks_and_tails_agree_and_strides_are_honoured() {
        // 37 pixels: two blocks of 16 and a tail of 5; odd width and height; padded strides.
        let (w, h, ys, cs) = (37usize, 5usize, 40usize, 24usize);
        let yp: Vec<u8> = (0..ys * h).map(|i| 16 + (i * 7 % 220) as u8).collect();
        let up: Vec<u8> = (0..cs * 3).map(|i| 16 + (i * 13 % 225) as u8).collect();
        let vp: Vec<u8> = (0..cs * 3).map(|i| 16 + (i * 29 % 225) as u8).collect();
        let src = I420 { width: w, height: h, y: &yp, u: &up, v: &vp, y_stride: ys, uv_stride: cs };
        assert!(src.is_valid());
        let stride = w * 3 + 4;
        for (path, tolerance) in [("simd", 2), ("rows", 1)] {
            let mut dst = vec![0xAAu8; stride * h];
            if path == "simd" {
                i420_to_bgr(&src, &mut dst, stride);
            } else {
                i420_to_bgr_rows(&src, &mut dst, stride);
            }
            for row in 0..h {
                for x in 0..w {
                    let (u, v) = (up[(row / 2) * cs + x / 2], vp[(row / 2) * cs + x / 2]);
                    let want = reference(yp[row * ys + x], u, v);
                    let got = &dst[row * stride + 3 * x..row * stride + 3 * x + 3];
                    for k in 0..3 {
                        assert!(
                            (i32::from(got[k]) - i32::from(want[k])).abs() <= tolerance,
                            "{path} ({x},{row}) {got:?} vs {want:?}"
                        );
                    }
                }
                assert_eq!(&dst[row * stride + w * 3..(row + 1) * stride], &[0xAA; 4], "{path}: padding untouched");
            }
        }
    }

    #[test]
    fn bgr_to_i420_and_back_is_close() {
        let (w, h) = (33usize, 18usize);
        // Smooth content (chroma subsampling loses detail, not level).
        let bgr: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(40 + 5 * x) as u8, (60 + 6 * y) as u8, (200 - 2 * x - 3 * y) as u8]
            })
            .collect();
        let cw = w.div_ceil(2);
        let (mut y, mut u, mut v) = (vec![0; w * h], vec![0; cw * h.div_ceil(2)], vec![0; cw * h.div_ceil(2)]);
        bgr_to_i420(&bgr, w * 3, w, h, &mut y, &mut u, &mut v);
        let src = I420 { width: w, height: h, y: &y, u: &u, v: &v, y_stride: w, uv_stride: cw };
        let mut back = vec![0; w * h * 3];
        i420_to_bgr(&src, &mut back, w * 3);
        let worst = bgr.iter().zip(&back).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).max().unwrap();
        assert!(worst <= 8, "worst {worst}");
    }

    #[test]
    fn yuyv_matches_the_planar_path() {
        let (w, h) = (20usize, 3usize);
        let packed: Vec<u8> = (0..w * 2 * h).map(|i| (i * 31 % 256) as u8).collect();
        let mut scratch = Vec::new();
        let mut out = vec![0; w * 3 * h];
        yuyv_to_bgr(&packed, w * 2, w, h, &mut out, w * 3, &mut scratch);
        for row in 0..h {
            for x in 0..w {
                let l = &packed[row * w * 2..];
                let want = reference(l[2 * x], l[4 * (x / 2) + 1], l[4 * (x / 2) + 3]);
                let got = &out[row * w * 3 + 3 * x..row * w * 3 + 3 * x + 3];
                for k in 0..3 {
                    assert!((i32::from(got[k]) - i32::from(want[k])).abs() <= 1);
                }
            }
        }
    }
}
