//! Letterbox preprocessing benchmark: 1920x1080 BGR8 → 1x3x640x640 f32 (RGB, /255, pad 114).
//!
//! * `ours`: `framepipe_vision::Preprocessor` (one fused pass).
//! * `fast_image_resize`: FIR bilinear (`Interpolation(Bilinear)`, OpenCV-like) to 640x360
//!   BGR u8, then one pad + BGR→RGB + normalise + HWC→CHW pass.
//! * `opencv`: `imgproc::resize` (INTER_LINEAR) + `cvt_color` BGR2RGB to 640x360 u8, then
//!   the same pad/normalise/CHW pass; OpenCV limited to 1 thread.
//! * `pad_chw_pass_only`: that shared pass alone.
//!
//! Times are CPU time of the benchmarking thread (see `ThreadCpu`).
//!
//! Run: `cargo bench -p framepipe-vision --bench preprocess -- --quick`

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fast_image_resize as fr;
use framepipe_vision::{FrameRef, PixelFormat, PreprocessConfig, Preprocessor};
#[cfg(feature = "opencv")]
use opencv::core::{Mat, Size, Vec3b};
#[cfg(feature = "opencv")]
use opencv::prelude::*;

const DST: usize = 640;
const NEW_H: usize = 360;
const PAD_Y: usize = 140;

/// Deterministic, non-trivial test image (smooth gradients plus a little noise).
fn test_image(src_w: usize, src_h: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(src_w * src_h * 3);
    let mut s: u32 = 12345;
    for y in 0..src_h {
        for x in 0..src_w {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let n = (s >> 28) as usize;
            v.push(((x / 8 + n) & 255) as u8);
            v.push(((y / 4 + n) & 255) as u8);
            v.push((((x + y) / 16) & 255) as u8);
        }
    }
    v
}

/// `LUT[v] = v / 255` (exact division, as NumPy's `im / 255`).
fn unit_lut() -> [f32; 256] {
    std::array::from_fn(|v| v as f32 / 255.0)
}

/// Pads a `DST x NEW_H` interleaved u8 image (channel order given by `swap`) into a
/// centred 640x640 planar RGB f32 tensor, normalised by /255 through a lookup table
/// (the fastest portable way we found: 3 table loads and 3 stores per pixel).
fn pad_normalize_chw(src: &[u8], swap_bgr: bool, lut: &[f32; 256], out: &mut [f32]) {
    let plane = DST * DST;
    let pad = lut[114];
    let (p0, rest) = out.split_at_mut(plane);
    let (p1, p2) = rest.split_at_mut(plane);
    for p in [&mut *p0, &mut *p1, &mut *p2] {
        p[..PAD_Y * DST].fill(pad);
        p[(PAD_Y + NEW_H) * DST..].fill(pad);
    }
    let (ri, bi) = if swap_bgr { (2, 0) } else { (0, 2) };
    let body = PAD_Y * DST..(PAD_Y + NEW_H) * DST;
    for (((px, r), g), b) in
        src.chunks_exact(3).zip(&mut p0[body.clone()]).zip(&mut p1[body.clone()]).zip(&mut p2[body])
    {
        *r = lut[usize::from(px[ri])];
        *g = lut[usize::from(px[1])];
        *b = lut[usize::from(px[bi])];
    }
}

fn bench_preprocess(c: &mut Criterion<ThreadCpu>) {
    // 1920x1080 is the target case (an exact 3x downscale, where INTER_LINEAR samples pixel
    // centres); 1280x720 (2x, weights 0.5) and 1600x900 (2.5x) exercise the general
    // two-tap interpolation path.
    for (src_w, src_h) in [(1920, 1080), (1280, 720), (1600, 900)] {
        bench_size(c, src_w, src_h);
    }
}

fn bench_size(c: &mut Criterion<ThreadCpu>, src_w: usize, src_h: usize) {
    let img = test_image(src_w, src_h);
    let mut out = vec![0.0f32; 3 * DST * DST];
    let lut = unit_lut();
    let mut g = c.benchmark_group(format!("preprocess_{src_w}x{src_h}_to_640"));

    // (a) ours
    let mut pre = Preprocessor::new(PreprocessConfig::new(DST, DST)).expect("config");
    let frame = FrameRef::new(src_w, src_h, src_w * 3, PixelFormat::Bgr8, &img).expect("frame");
    g.bench_function("ours", |b| {
        b.iter(|| {
            let p = pre.preprocess(black_box(frame), &mut out).expect("preprocess");
            black_box(p);
        })
    });

    // (b) fast_image_resize + own pad/normalise/CHW pass
    let src = fr::images::ImageRef::new(src_w as u32, src_h as u32, &img, fr::PixelType::U8x3).expect("fir src");
    let mut dst = fr::images::Image::new(DST as u32, NEW_H as u32, fr::PixelType::U8x3);
    let mut resizer = fr::Resizer::new();
    let opts = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Interpolation(fr::FilterType::Bilinear));
    g.bench_function("fast_image_resize", |b| {
        b.iter(|| {
            resizer.resize(black_box(&src), &mut dst, &opts).expect("fir resize");
            pad_normalize_chw(dst.buffer(), true, &lut, &mut out);
            black_box(&out);
        })
    });

    // (c) OpenCV resize + cvtColor + own pad/normalise/CHW pass (with `--features opencv`)
    #[cfg(feature = "opencv")]
    {
        let src_mat = Mat::new_rows_cols_with_bytes::<Vec3b>(src_h as i32, src_w as i32, &img).expect("cv src");
        let mut resized = Mat::default();
        let mut rgb = Mat::default();
        // One OpenCV thread: the comparison is single-core (and thread CPU time would not
        // see OpenCV's worker threads).
        opencv::core::set_num_threads(1).expect("set threads");
        g.bench_function("opencv", |b| {
            b.iter(|| {
                opencv::imgproc::resize(
                    black_box(&src_mat),
                    &mut resized,
                    Size::new(DST as i32, NEW_H as i32),
                    0.0,
                    0.0,
                    opencv::imgproc::INTER_LINEAR,
                )
                .expect("cv resize");
                opencv::imgproc::cvt_color_def(&resized, &mut rgb, opencv::imgproc::COLOR_BGR2RGB).expect("cv cvt");
                pad_normalize_chw(rgb.data_bytes().expect("cv bytes"), false, &lut, &mut out);
                black_box(&out);
            })
        });
    }

    // The shared pad/normalise/CHW pass of (b) and (c) on its own.
    let small = vec![7u8; DST * NEW_H * 3];
    g.bench_function("pad_chw_pass_only", |b| {
        b.iter(|| {
            pad_normalize_chw(black_box(&small), true, &lut, &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

/// Criterion measurement: CPU time of the benchmarking thread
/// (`CLOCK_THREAD_CPUTIME_ID`). The development machine has 2 cores shared with
/// parallel builds, so wall time mostly measures how often the thread was
/// preempted; thread CPU time does not count that. Every route measured here
/// runs on the calling thread (OpenCV is set to 1 thread).
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call, and
    // CLOCK_THREAD_CPUTIME_ID is a clock id Linux always supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNs
    }
}

/// Formats nanoseconds of CPU time like criterion's wall-clock formatter.
struct CpuNs;

impl ValueFormatter for CpuNs {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical_ns {
            t if t < 1e3 => (1.0, "ns (cpu)"),
            t if t < 1e6 => (1e-3, "µs (cpu)"),
            t if t < 1e9 => (1e-6, "ms (cpu)"),
            _ => (1e-9, "s (cpu)"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, _typical: f64, _t: &Throughput, _values: &mut [f64]) -> &'static str {
        "ns (cpu)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench_preprocess
}
criterion_main!(benches);
