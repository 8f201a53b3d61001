//! Helpers shared by the integration tests: asset lookup, seeded inputs, comparisons.
#![allow(dead_code)]

use std::path::PathBuf;

use framepipe_infer::{EngineOptions, Tensor};

/// `$FRAMEPIPE_ASSETS`, or the workspace's `assets/`.
pub fn assets_dir() -> PathBuf {
    match std::env::var_os("FRAMEPIPE_ASSETS").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets"),
    }
}

/// The path of a fetched asset; fails the test with instructions when it is missing.
pub fn asset(relative: &str) -> PathBuf {
    let path = assets_dir().join(relative);
    assert!(
        path.is_file(),
        "missing test asset {}: run scripts/fetch-assets.sh (or set FRAMEPIPE_ASSETS to where it put them)",
        path.display()
    );
    path
}

pub fn person_model() -> PathBuf {
    asset("models/person-yolov8s.onnx")
}

pub fn centerface_model() -> PathBuf {
    asset("models/centerface.onnx")
}

/// Engine options pointing ort at the fetched ONNX Runtime.
pub fn ort_options() -> EngineOptions {
    let mut opts = EngineOptions::default();
    opts.ort.dylib = Some(asset("onnxruntime/libonnxruntime.so"));
    opts
}

/// `n` deterministic pseudo-random values in `[0, 1)` (SplitMix64).
pub fn seeded_input(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// Asserts two output sets have the same names and shapes and every value within `tol`
/// (absolute); returns the largest difference seen.
pub fn assert_close(what: &str, a: &[Tensor], b: &[Tensor], tol: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "{what}: output count");
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.name, y.name, "{what}: output names");
        assert_eq!(x.shape, y.shape, "{what}: shape of `{}`", x.name);
        assert_eq!(x.data.len(), x.shape.iter().product::<usize>(), "{what}: length of `{}`", x.name);
        assert_eq!(x.data.len(), y.data.len(), "{what}: length of `{}`", x.name);
        for (i, (p, q)) in x.data.iter().zip(&y.data).enumerate() {
            assert!(p.is_finite() && q.is_finite(), "{what}: `{}`[{i}] not finite: {p} vs {q}", x.name);
            let d = (p - q).abs();
            assert!(d <= tol, "{what}: `{}`[{i}] differs by {d} ({p} vs {q}), tolerance {tol}", x.name);
            worst = worst.max(d);
        }
    }
    worst
}
