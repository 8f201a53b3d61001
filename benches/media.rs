//! The media layer on one core, 1080p:
//!
//! * `yuv_to_bgr/native`: our I420 → BGR (`framepipe_video::yuv::i420_to_bgr`) of a 1920×1080
//!   picture; `yuv_to_bgr/opencv`: OpenCV's `cvtColor(COLOR_YUV2BGR_I420)` on the same planes
//!   (with `--features opencv`, one OpenCV thread);
//! * `decode_1080p_h264_high/native` and `/opencv`: one frame of a 1080p H.264 High (B-frames)
//!   file that ffmpeg makes at start, decoded and converted into a pooled BGR frame by each
//!   backend through the same `VideoSource`.
//!
//! `cargo bench -p framepipe-video --bench media [--features opencv]`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use framepipe_video::yuv::{i420_to_bgr, I420};
use framepipe_video::{DecoderChoice, OpenOptions, SourceSpec, VideoSource};

const W: usize = 1920;
const H: usize = 1080;

fn planes() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let y = (0..W * H).map(|i| ((i % W) * 255 / W) as u8 ^ ((i / W) as u8)).collect();
    let u = (0..W * H / 4).map(|i| (i * 7 % 256) as u8).collect();
    let v = (0..W * H / 4).map(|i| (i * 13 % 256) as u8).collect();
    (y, u, v)
}

fn yuv_to_bgr(c: &mut Criterion) {
    let (y, u, v) = planes();
    let mut out = vec![0u8; W * H * 3];
    let mut g = c.benchmark_group("yuv_to_bgr");
    g.throughput(Throughput::Elements((W * H) as u64));
    g.bench_function("native", |b| {
        let pic = I420 { width: W, height: H, y: &y, u: &u, v: &v, y_stride: W, uv_stride: W / 2 };
        b.iter(|| i420_to_bgr(black_box(&pic), &mut out, W * 3))
    });
    #[cfg(feature = "opencv")]
    {
        use opencv::core::Mat;
        opencv::core::set_num_threads(1).expect("one OpenCV thread");
        let mut packed = y.clone();
        packed.extend_from_slice(&u);
        packed.extend_from_slice(&v);
        let src = Mat::new_rows_cols_with_bytes::<u8>((H * 3 / 2) as i32, W as i32, &packed).expect("mat");
        let mut dst = Mat::default();
        g.bench_function("opencv", |b| {
            b.iter(|| {
                opencv::imgproc::cvt_color_def(black_box(&src), &mut dst, opencv::imgproc::COLOR_YUV2BGR_I420)
                    .expect("cvtColor")
            })
        });
    }
    g.finish();
}

/// A 1080p H.264 High file with B-frames (ffmpeg, libx264), 120 frames.
fn clip(dir: &Path) -> PathBuf {
    let p = dir.join("high-1080p.mp4");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30"])
        .args(["-frames:v", "120", "-c:v", "libx264", "-profile:v", "high", "-bf", "3", "-pix_fmt", "yuv420p"])
        .arg(&p)
        .status()
        .expect("the bench makes its clip with ffmpeg (scripts/setup.sh installs it)");
    assert!(ok.success());
    p
}

fn decode(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = clip(dir.path());
    let mut g = c.benchmark_group("decode_1080p_h264_high");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(8));
    let mut choices = vec![("native", DecoderChoice::Native)];
    if DecoderChoice::OPENCV_BUILT_IN {
        #[cfg(feature = "opencv")]
        opencv::core::set_num_threads(1).expect("one OpenCV thread");
        choices.push(("opencv", DecoderChoice::OpenCv));
    }
    for (name, decoder) in choices {
        let opts = OpenOptions { decoder, ..Default::default() };
        let spec = SourceSpec::File(path.clone());
        g.bench_function(name, |b| {
            b.iter_custom(|n| {
                let mut total = Duration::ZERO;
                let mut left = n;
                while left > 0 {
                    let mut src = VideoSource::open_with(&spec, 2, &opts).expect("open");
                    src.read_frame(); // the frame decoded at open
                    let t = Instant::now();
                    let mut got = 0;
                    while got < left {
                        match src.read_frame() {
                            Some(f) => {
                                black_box(f.expect("decodes"));
                                got += 1;
                            }
                            None => break,
                        }
                    }
                    total += t.elapsed();
                    left -= got;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = yuv_to_bgr, decode
}
criterion_main!(benches);
