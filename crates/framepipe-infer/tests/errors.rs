//! Bad files and bad calls give errors, never panics. Uses a tiny model built in code and the
//! fetched ONNX Runtime.

mod common;

use std::path::PathBuf;

use framepipe_infer::{load, testing, EngineChoice, EngineOptions, InferError, TensorRef};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framepipe-infer-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every engine this build has, with options that find the fetched ONNX Runtime.
fn all_choices() -> Vec<(EngineChoice, EngineOptions)> {
    #[allow(unused_mut)]
    let mut choices = vec![(EngineChoice::Tract, EngineOptions::default())];
    #[cfg(feature = "ort")]
    choices.extend([(EngineChoice::Ort, common::ort_options()), (EngineChoice::Auto, common::ort_options())]);
    choices
}

#[test]
fn a_missing_model_is_an_error_naming_the_path() {
    let path = PathBuf::from("/nonexistent/dir/model.onnx");
    for (choice, opts) in all_choices() {
        let err = load(&path, choice, &opts).err().expect("must fail");
        assert!(matches!(err, InferError::ModelNotFound { .. }), "{choice:?}: {err:?}");
        assert_eq!(err.to_string(), "model file not found: /nonexistent/dir/model.onnx");
    }
}

#[test]
fn a_garbage_file_is_an_error_not_a_panic() {
    let dir = temp_dir("garbage");
    // xorshift bytes: not a protobuf.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let bytes: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, &bytes).unwrap();
    let empty = dir.join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("text.onnx");
    std::fs::write(&text, b"this is not an onnx model at all\n").unwrap();
    for path in [&garbage, &empty, &text] {
        for (choice, opts) in all_choices() {
            let err = load(path, choice, &opts).err().expect("must fail");
            let msg = err.to_string();
            assert!(matches!(err, InferError::InvalidModel { .. }), "{choice:?} {}: {err:?}", path.display());
            assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_directory_is_an_error() {
    let dir = temp_dir("isdir");
    let err = load(&dir, EngineChoice::Tract, &EngineOptions::default()).err().unwrap();
    assert!(matches!(err, InferError::Io { .. }), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zero_threads_is_refused() {
    let opts = EngineOptions { intra_threads: 0, ..EngineOptions::default() };
    let err = load(&PathBuf::from("x.onnx"), EngineChoice::Tract, &opts).err().unwrap();
    assert!(matches!(err, InferError::InvalidOptions(_)), "{err:?}");
}

#[test]
fn the_tiny_model_runs_the_same_on_both_engines() {
    let dir = temp_dir("affine");
    let path = dir.join("affine.onnx");
    std::fs::write(&path, testing::affine_model(5, 3.0, -1.0)).unwrap();
    for (choice, opts) in all_choices() {
        for threads in [1, 2] {
            let opts = EngineOptions { intra_threads: threads, ..opts.clone() };
            let (engine, selection) = load(&path, choice, &opts).unwrap();
            #[cfg(feature = "ort")]
            if choice != EngineChoice::Tract {
                assert_eq!(selection.kind, framepipe_infer::EngineKind::Ort);
            }
            let _ = selection;
            assert_eq!(engine.model().metadata.get("names").unwrap(), "{0: 'thing'}");
            assert_eq!(engine.model().outputs[0].name, "y");
            let mut session = engine.session().unwrap();
            assert_eq!(session.inputs()[0].name, "x");
            assert_eq!(session.outputs()[0].name, "y");
            for round in 0..3 {
                let x: Vec<f32> = (0..5).map(|i| (i + round) as f32).collect();
                let out = session.run(&[TensorRef::new(&[1, 5], &x)]).unwrap();
                let want: Vec<f32> = x.iter().map(|v| 3.0 * v - 1.0).collect();
                assert_eq!(out[0].data, want, "{choice:?} threads {threads} round {round}");
                assert_eq!(out[0].shape, vec![1, 5]);
            }
            let err = session.run(&[TensorRef::new(&[1, 4], &[0.0; 4])]).unwrap_err();
            assert_eq!(err.to_string(), "model input `x` expects [1, 5] but the preprocessing produces [1, 4]");
            let two = [TensorRef::new(&[1, 5], &[0.0; 5]), TensorRef::new(&[1, 5], &[0.0; 5])];
            assert!(matches!(session.run(&two), Err(InferError::InputCount { .. })));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "ort")]
#[test]
fn an_unavailable_execution_provider_is_a_clear_error() {
    let dir = temp_dir("ep");
    let path = dir.join("affine.onnx");
    std::fs::write(&path, testing::affine_model(2, 1.0, 0.0)).unwrap();
    use common::ort_options;
    for ep in [
        framepipe_infer::ExecutionProvider::Cuda { device_id: 0 },
        framepipe_infer::ExecutionProvider::TensorRt { device_id: 0, fp16: true, engine_cache_dir: None },
    ] {
        let mut opts = ort_options();
        opts.ort.execution_provider = ep.clone();
        for choice in [EngineChoice::Ort, EngineChoice::Auto] {
            let err = load(&path, choice, &opts).err().expect("the fetched ORT is CPU-only");
            assert!(matches!(err, InferError::ExecutionProviderUnavailable { .. }), "{err:?}");
            assert!(err.to_string().contains(ep.ort_name()), "{err}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "ort")]
#[test]
fn a_second_onnx_runtime_is_refused() {
    use common::ort_options;
    let dir = temp_dir("second");
    let path = dir.join("affine.onnx");
    std::fs::write(&path, testing::affine_model(2, 1.0, 0.0)).unwrap();
    load(&path, EngineChoice::Ort, &ort_options()).unwrap();
    let mut opts = ort_options();
    opts.ort.dylib = Some(dir.join("libonnxruntime.so"));
    let err = load(&path, EngineChoice::Ort, &opts).err().unwrap();
    assert!(matches!(err, InferError::OrtAlreadyLoaded { .. }), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(not(feature = "ort"))]
#[test]
fn without_the_ort_feature_ort_is_refused_and_auto_is_tract() {
    let dir = temp_dir("no-ort");
    let path = dir.join("affine.onnx");
    std::fs::write(&path, testing::affine_model(2, 1.0, 0.0)).unwrap();
    let err = load(&path, EngineChoice::Ort, &EngineOptions::default()).err().unwrap();
    assert!(matches!(err, InferError::EngineNotCompiled { .. }), "{err:?}");
    assert!(err.to_string().contains("feature `ort`"), "{err}");
    let (_, selection) = load(&path, EngineChoice::Auto, &EngineOptions::default()).unwrap();
    assert_eq!(selection.kind, framepipe_infer::EngineKind::Tract);
    std::fs::remove_dir_all(&dir).unwrap();
}
