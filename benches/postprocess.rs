//! Postprocessing benchmark: decode + confidence threshold + class-aware NMS +
//! map to frame over YOLOv8 outputs of shape 1x84x8400 (80 classes) and
//! 1x6x8400 (2 classes), with a few hundred candidates above the threshold.
//!
//! Times are CPU time of the benchmarking thread (see `ThreadCpu`).
//!
//! Run: `cargo bench -p framepipe-vision --bench postprocess -- --quick`

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use framepipe_vision::{
    DecodeScratch, Decoder, LetterboxParams, PostprocessConfig, Postprocessor, PreprocessConfig, TensorView,
};

const ANCHORS: usize = 8400;

/// Deterministic YOLOv8-like output (channels first). Every 23rd anchor is
/// "hot" (one class in 0.3..1.0, ~365 candidates above 0.25); the others
/// score below 0.2. Boxes sit on a 40x40 grid of clusters so NMS has
/// overlapping boxes to suppress.
fn yolov8_output(nc: usize) -> Vec<f32> {
    let n = ANCHORS;
    let mut d = vec![0.0f32; (4 + nc) * n];
    let mut s: u32 = 42;
    let mut rnd = || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) as f32 / (1u32 << 24) as f32
    };
    for i in 0..n {
        d[i] = 16.0 * (i % 40) as f32 + 8.0 * rnd();
        d[n + i] = 16.0 * ((i / 40) % 40) as f32 + 8.0 * rnd();
        d[2 * n + i] = 20.0 + 30.0 * rnd();
        d[3 * n + i] = 20.0 + 30.0 * rnd();
        let hot = i % 23 == 0;
        for c in 0..nc {
            let v = rnd();
            d[(4 + c) * n + i] = if hot && c == (i / 23) % nc { 0.3 + 0.7 * v } else { 0.2 * v };
        }
    }
    d
}

fn bench_postprocess(c: &mut Criterion<ThreadCpu>) {
    let lb = LetterboxParams::compute(1920, 1080, &PreprocessConfig::new(640, 640)).expect("letterbox");
    let mut g = c.benchmark_group("postprocess_yolov8");
    for nc in [80usize, 2] {
        let data = yolov8_output(nc);
        let shape = [1, 4 + nc, ANCHORS];
        let view = TensorView::new(&shape, &data).expect("view");
        let decoder = Decoder::from_output_shape(&shape, None).expect("decoder");
        let config = PostprocessConfig::default();

        // Report the workload once.
        let mut cands = Vec::new();
        decoder.decode(&[view], config.conf_threshold, &mut DecodeScratch::new(), &mut cands).expect("decode");
        let mut post = Postprocessor::new(decoder.clone(), config).expect("post");
        let mut dets = Vec::new();
        post.process(&[view], &lb, &mut dets).expect("process");
        eprintln!(
            "1x{}x{ANCHORS}: {} candidates above {}, {} kept after NMS",
            4 + nc,
            cands.len(),
            config.conf_threshold,
            dets.len()
        );

        let id = format!("1x{}x{ANCHORS}", 4 + nc);
        g.bench_function(format!("{id}/decode_nms_map"), |b| {
            b.iter(|| {
                post.process(black_box(&[view]), &lb, &mut dets).expect("process");
                black_box(&dets);
            })
        });
        let mut scratch = DecodeScratch::new();
        g.bench_function(format!("{id}/decode_only"), |b| {
            b.iter(|| {
                cands.clear();
                decoder.decode(black_box(&[view]), config.conf_threshold, &mut scratch, &mut cands).expect("decode");
                black_box(&cands);
            })
        });
    }
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
    targets = bench_postprocess
}
criterion_main!(benches);
