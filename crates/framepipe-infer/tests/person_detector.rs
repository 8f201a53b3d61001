//! The fetched YOLOv8s person detector through both engines.

mod common;

use std::sync::{Arc, Barrier};

#[cfg(feature = "ort")]
use common::{assert_close, ort_options};
use common::{person_model, seeded_input};
#[cfg(feature = "ort")]
use framepipe_infer::Tensor;
use framepipe_infer::{check_input, load, Engine, EngineChoice, EngineKind, EngineOptions, InferError, TensorRef};

const SHAPE: [usize; 4] = [1, 3, 640, 640];
const LEN: usize = 3 * 640 * 640;

fn tract_engine() -> Arc<dyn Engine> {
    let (engine, selection) =
        load(&person_model(), EngineChoice::Tract, &EngineOptions::default()).expect("tract loads");
    assert_eq!(selection.kind, EngineKind::Tract);
    engine
}

#[cfg(feature = "ort")]
fn ort_engine() -> Arc<dyn Engine> {
    let (engine, selection) = load(&person_model(), EngineChoice::Ort, &ort_options()).expect("ort loads");
    assert_eq!(selection.kind, EngineKind::Ort);
    assert!(selection.reason.contains("ONNX Runtime 1."), "{}", selection.reason);
    engine
}

fn check_info(engine: &dyn Engine) {
    let info = engine.model();
    assert_eq!(info.inputs.len(), 1);
    assert_eq!(info.inputs[0].name, "images");
    assert_eq!(info.inputs[0].shape, vec![Some(1), Some(3), Some(640), Some(640)]);
    assert_eq!(info.inputs[0].dtype, framepipe_infer::DType::F32);
    assert_eq!(info.outputs.len(), 1);
    assert_eq!(info.outputs[0].name, "output0");
    assert_eq!(info.outputs[0].shape, vec![Some(1), Some(6), Some(8400)]);
    assert_eq!(info.metadata.get("names").map(String::as_str), Some("{0: 'Normal', 1: 'Fall'}"));
    assert_eq!(info.metadata.get("imgsz").map(String::as_str), Some("[640, 640]"));
    assert!(info.metadata.contains_key("stride"));
    assert!(info.metadata.contains_key("task"));
    check_input(info, &SHAPE).expect("matching shape accepted");
}

#[cfg(feature = "ort")]
fn run_once(engine: &dyn Engine, input: &[f32]) -> Vec<Tensor> {
    let mut session = engine.session().expect("session");
    session.run(&[TensorRef::new(&SHAPE, input)]).expect("run").to_vec()
}

#[test]
fn tract_loads_with_the_declared_shapes_and_metadata() {
    let engine = tract_engine();
    assert_eq!(engine.kind(), EngineKind::Tract);
    check_info(engine.as_ref());
}

#[cfg(feature = "ort")]
#[test]
fn ort_loads_with_the_declared_shapes_and_metadata() {
    let engine = ort_engine();
    assert_eq!(engine.kind(), EngineKind::Ort);
    check_info(engine.as_ref());
}

#[cfg(feature = "ort")]
#[test]
fn tract_and_ort_agree_on_every_output_value() {
    use std::time::Instant;
    let input = seeded_input(LEN, 42);
    let t0 = Instant::now();
    let tract = run_once(tract_engine().as_ref(), &input);
    let t1 = Instant::now();
    let ort = run_once(ort_engine().as_ref(), &input);
    let t2 = Instant::now();
    assert_eq!(tract[0].shape, vec![1, 6, 8400]);
    let worst = assert_close("person tract vs ort", &tract, &ort, 1e-3);
    eprintln!("person: tract load+run {:?}, ort load+run {:?}, max |diff| {worst:e}", t1 - t0, t2 - t1);
}

/// Two sessions of one engine on two threads, each running two different inputs, give exactly
/// what a single session gives.
fn replicas_match_a_single_session(engine: Arc<dyn Engine>) {
    let a = seeded_input(LEN, 1);
    let b = seeded_input(LEN, 2);
    let mut single = engine.session().unwrap();
    let ref_a = single.run(&[TensorRef::new(&SHAPE, &a)]).unwrap().to_vec();
    let ref_b = single.run(&[TensorRef::new(&SHAPE, &b)]).unwrap().to_vec();
    assert_ne!(ref_a, ref_b, "different inputs give different outputs");
    // The same session again: its reused buffers hold the new results.
    let again = single.run(&[TensorRef::new(&SHAPE, &a)]).unwrap();
    assert_eq!(again, ref_a.as_slice());
    drop(single);

    let barrier = Arc::new(Barrier::new(2));
    let inputs = [(a.clone(), b.clone()), (b, a)];
    let handles: Vec<_> = inputs
        .into_iter()
        .map(|(first, second)| {
            let mut session = engine.session().unwrap();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let x = session.run(&[TensorRef::new(&SHAPE, &first)]).unwrap();
                let ptr = x[0].data.as_ptr();
                let x = x.to_vec();
                let y = session.run(&[TensorRef::new(&SHAPE, &second)]).unwrap();
                // Output buffers are reused, not reallocated.
                assert_eq!(y[0].data.as_ptr(), ptr);
                (x, y.to_vec())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results[0].0, ref_a);
    assert_eq!(results[0].1, ref_b);
    assert_eq!(results[1].0, ref_b);
    assert_eq!(results[1].1, ref_a);
}

#[test]
fn tract_replicas_on_two_threads_match_a_single_session() {
    replicas_match_a_single_session(tract_engine());
}

#[cfg(feature = "ort")]
#[test]
fn ort_replicas_on_two_threads_match_a_single_session() {
    replicas_match_a_single_session(ort_engine());
}

#[cfg(feature = "ort")]
#[test]
fn ort_shared_weights_and_no_arena_give_the_same_outputs() {
    let input = seeded_input(LEN, 7);
    let private = run_once(ort_engine().as_ref(), &input);
    for (share_weights, cpu_arena) in [(true, true), (false, false)] {
        let mut opts = ort_options();
        opts.ort.share_weights = share_weights;
        opts.ort.cpu_arena = cpu_arena;
        let (engine, _) = load(&person_model(), EngineChoice::Ort, &opts).unwrap();
        let mut session = engine.session().unwrap();
        for _ in 0..2 {
            let out = session.run(&[TensorRef::new(&SHAPE, &input)]).unwrap();
            assert_eq!(out, private.as_slice(), "share {share_weights} arena {cpu_arena}");
        }
    }
}

#[test]
fn check_input_refuses_a_wrong_shape_naming_both() {
    let engine = tract_engine();
    let err = check_input(engine.model(), &[1, 3, 320, 320]).unwrap_err();
    assert!(matches!(err, InferError::InputShapeMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "model input `images` expects [1, 3, 640, 640] but the preprocessing produces [1, 3, 320, 320]"
    );
    let err = check_input(engine.model(), &[3, 640, 640]).unwrap_err();
    assert!(err.to_string().contains("[3, 640, 640]"), "{err}");
}

fn bad_runs_are_refused(engine: Arc<dyn Engine>) {
    let mut session = engine.session().unwrap();
    let short = vec![0.5f32; 100];
    let err = session.run(&[TensorRef::new(&SHAPE, &short)]).unwrap_err();
    assert!(matches!(err, InferError::InputLength { .. }), "{err:?}");
    assert_eq!(err.to_string(), "input `images`: shape [1, 3, 640, 640] holds 1228800 values but 100 were given");

    let small = vec![0.5f32; 3 * 320 * 320];
    let err = session.run(&[TensorRef::new(&[1, 3, 320, 320], &small)]).unwrap_err();
    assert!(err.to_string().contains("expects [1, 3, 640, 640]"), "{err}");

    let err = session.run(&[]).unwrap_err();
    assert!(matches!(err, InferError::InputCount { expected: 1, got: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("`images`"), "{err}");

    // The session still works after refusing bad input.
    let input = seeded_input(LEN, 3);
    let out = session.run(&[TensorRef::new(&SHAPE, &input)]).unwrap();
    assert_eq!(out[0].shape, vec![1, 6, 8400]);
}

#[test]
fn tract_refuses_bad_runs_with_clear_errors() {
    bad_runs_are_refused(tract_engine());
}

#[cfg(feature = "ort")]
#[test]
fn ort_refuses_bad_runs_with_clear_errors() {
    bad_runs_are_refused(ort_engine());
}

#[cfg(feature = "ort")]
#[test]
fn auto_picks_ort_when_its_library_loads() {
    let (engine, selection) = load(&person_model(), EngineChoice::Auto, &ort_options()).unwrap();
    assert_eq!(selection.kind, EngineKind::Ort);
    assert_eq!(engine.kind(), EngineKind::Ort);
    assert!(selection.reason.starts_with("ort: ONNX Runtime 1.31.1 found at "), "{}", selection.reason);
}
