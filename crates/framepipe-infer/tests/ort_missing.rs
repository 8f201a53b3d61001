//! Without a usable ONNX Runtime. Its own test binary (process): ONNX Runtime, once loaded,
//! stays loaded, so no test here may load the real one.
#![cfg(feature = "ort")]

mod common;

use std::path::PathBuf;

use common::person_model;
use framepipe_infer::{load, EngineChoice, EngineKind, EngineOptions, InferError};

fn bogus() -> EngineOptions {
    let mut opts = EngineOptions::default();
    opts.ort.dylib = Some(PathBuf::from("/nonexistent/lib/libonnxruntime.so"));
    opts
}

#[test]
fn a_bogus_dylib_is_a_clear_error_and_auto_falls_back_to_tract() {
    // Explicit ort: an error that says where it looked and what to do.
    let err = load(&person_model(), EngineChoice::Ort, &bogus()).err().expect("no ORT there");
    assert!(matches!(err, InferError::OrtNotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "ONNX Runtime library not found (looked in: /nonexistent/lib/libonnxruntime.so (not found)): \
         set ORT_DYLIB_PATH or run scripts/fetch-assets.sh"
    );

    // A file that is not a shared library.
    let not_a_lib = std::env::temp_dir().join(format!("framepipe-fake-ort-{}.so", std::process::id()));
    std::fs::write(&not_a_lib, b"not an ELF file").unwrap();
    let mut opts = EngineOptions::default();
    opts.ort.dylib = Some(not_a_lib.clone());
    let err = load(&person_model(), EngineChoice::Ort, &opts).err().expect("not a library");
    let msg = err.to_string();
    assert!(msg.contains("failed to load") && msg.contains(&*not_a_lib.to_string_lossy()), "{msg}");
    std::fs::remove_file(&not_a_lib).unwrap();

    // Auto: tract, with the reason.
    let (engine, selection) = load(&person_model(), EngineChoice::Auto, &bogus()).unwrap();
    assert_eq!(selection.kind, EngineKind::Tract);
    assert_eq!(engine.kind(), EngineKind::Tract);
    assert_eq!(
        selection.reason,
        "tract: ONNX Runtime not found (looked in /nonexistent/lib/libonnxruntime.so (not found)); \
         tract is the pure-Rust fallback"
    );
}

#[test]
fn the_default_candidates_are_listed() {
    let candidates = framepipe_infer::ort_library_candidates();
    assert!(candidates.iter().any(|c| c.ends_with("assets/onnxruntime/libonnxruntime.so")), "{candidates:?}");
}
