//! The fetched CenterFace model (an old export with static, wrong declared shapes and weights
//! listed as inputs) at 1x3x480x640 through both engines.

mod common;

use common::{centerface_model, seeded_input};
use framepipe_infer::{load, Engine, EngineChoice, EngineKind, EngineOptions, Tensor, TensorRef};

const SHAPE: [usize; 4] = [1, 3, 480, 640];
const OUTPUT_SHAPES: [[usize; 4]; 4] = [[1, 1, 120, 160], [1, 2, 120, 160], [1, 2, 120, 160], [1, 10, 120, 160]];

fn options(opts: EngineOptions) -> EngineOptions {
    EngineOptions { input_shape: Some(SHAPE.to_vec()), ..opts }
}

fn check_info(engine: &dyn Engine) {
    let info = engine.model();
    assert_eq!(info.inputs.len(), 1, "{}: initializers listed as inputs are not inputs", engine.kind());
    assert_eq!(info.inputs[0].name, "input.1");
    assert_eq!(info.inputs[0].shape, vec![Some(1), Some(3), Some(480), Some(640)]);
    let names: Vec<&str> = info.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["537", "538", "539", "540"]);
}

fn run(engine: &dyn Engine, input: &[f32]) -> Vec<Tensor> {
    let out = engine.session().unwrap().run(&[TensorRef::new(&SHAPE, input)]).unwrap().to_vec();
    for (t, shape) in out.iter().zip(&OUTPUT_SHAPES) {
        assert_eq!(&t.shape, shape, "`{}`", t.name);
    }
    out
}

#[test]
fn tract_runs_centerface_at_480x640() {
    let (tract, sel) = load(&centerface_model(), EngineChoice::Tract, &options(EngineOptions::default())).unwrap();
    assert_eq!(sel.kind, EngineKind::Tract);
    check_info(tract.as_ref());
    // tract works the output shapes out from the input shape.
    let shapes: Vec<_> = tract.model().outputs.iter().map(|o| o.shape.clone()).collect();
    let want: Vec<Vec<Option<usize>>> = OUTPUT_SHAPES.iter().map(|s| s.iter().map(|d| Some(*d)).collect()).collect();
    assert_eq!(shapes, want);
    run(tract.as_ref(), &seeded_input(SHAPE.iter().product(), 5));
}

#[cfg(feature = "ort")]
#[test]
fn tract_and_ort_agree_on_all_four_outputs_at_480x640() {
    use common::{assert_close, ort_options};

    let input: Vec<f32> = seeded_input(SHAPE.iter().product(), 5);
    let (tract, _) = load(&centerface_model(), EngineChoice::Tract, &options(EngineOptions::default())).unwrap();
    let (ort, sel) = load(&centerface_model(), EngineChoice::Ort, &options(ort_options())).unwrap();
    assert_eq!(sel.kind, EngineKind::Ort);
    check_info(ort.as_ref());

    let a = run(tract.as_ref(), &input);
    let mut os = ort.session().unwrap();
    let b = os.run(&[TensorRef::new(&SHAPE, &input)]).unwrap().to_vec();
    let worst = assert_close("centerface tract vs ort", &a, &b, 1e-3);
    eprintln!("centerface: max |diff| {worst:e}");
    // Second ort run: into the pre-allocated outputs, same values.
    let c = os.run(&[TensorRef::new(&SHAPE, &input)]).unwrap();
    assert_eq!(c, b.as_slice());
}

#[test]
fn the_declared_shape_still_works_without_override() {
    let (tract, _) = load(&centerface_model(), EngineChoice::Tract, &EngineOptions::default()).unwrap();
    assert_eq!(tract.model().inputs[0].shape, vec![Some(10), Some(3), Some(32), Some(32)]);
    let shape = [10, 3, 32, 32];
    let input = seeded_input(shape.iter().product(), 9);
    let out = tract.session().unwrap().run(&[TensorRef::new(&shape, &input)]).unwrap().to_vec();
    assert_eq!(out[0].shape, vec![10, 1, 8, 8]);
}

#[test]
fn a_wrong_rank_override_is_refused() {
    let opts = EngineOptions { input_shape: Some(vec![3, 480, 640]), ..EngineOptions::default() };
    let err = load(&centerface_model(), EngineChoice::Tract, &opts).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("rank 3") && msg.contains("input.1"), "{msg}");
}
