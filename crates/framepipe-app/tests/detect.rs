//! Real models on real photos: the person detector finds the astronaut, CenterFace finds her face,
//! on both CPU engines; bad models are refused with errors that name them.

use std::path::PathBuf;

use framepipe_app::detect::detect_image;
use framepipe_app::{AppError, DetectModel, ModelKind, ModelOptions};
use framepipe_infer::EngineChoice;
use framepipe_vision::BBox;

fn asset(rel: &str) -> PathBuf {
    let root = std::env::var_os("FRAMEPIPE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets"));
    let p = root.join(rel);
    assert!(p.exists(), "{} is missing: run scripts/fetch-assets.sh", p.display());
    p
}

fn bbox(b: [f32; 4]) -> BBox {
    BBox { x1: b[0], y1: b[1], x2: b[2], y2: b[3] }
}

/// Labelled by hand on astronaut.png (512x512): the astronaut from her hair to the bottom edge,
/// from the left edge to her right shoulder.
const ASTRONAUT: [f32; 4] = [0.0, 18.0, 370.0, 512.0];
/// Her face, forehead to chin, cheek to cheek.
const FACE: [f32; 4] = [185.0, 62.0, 272.0, 178.0];

fn opts(engine: EngineChoice) -> ModelOptions {
    ModelOptions { engine, ..Default::default() }
}

#[test]
fn the_person_detector_finds_the_astronaut_on_both_engines() {
    for engine in [EngineChoice::Ort, EngineChoice::Tract] {
        let model = DetectModel::load(&asset("models/person-yolov8s.onnx"), &opts(engine)).unwrap();
        assert_eq!(model.kind(), ModelKind::Yolo);
        assert_eq!(model.input_shape(), &[1, 3, 640, 640]);
        assert_eq!(model.labels().label(1), "Fall");
        let r = detect_image(model, &asset("images/astronaut.png"), None).unwrap();
        assert_eq!((r.image.width, r.image.height), (512, 512));
        let best = r
            .detections
            .iter()
            .filter(|d| d.label == "Normal")
            .map(|d| (bbox(d.bbox).iou(&bbox(ASTRONAUT)), d))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .expect("no person found");
        assert!(best.0 >= 0.5, "{engine:?}: best IoU {:.3} with {:?}", best.0, best.1);
        assert!(best.1.score > 0.4, "{:?}", best.1);
        // Boxes are in image pixels, clipped to the image.
        for d in &r.detections {
            assert!(d.bbox[0] >= 0.0 && d.bbox[1] >= 0.0 && d.bbox[2] <= 512.0 && d.bbox[3] <= 512.0, "{d:?}");
        }
    }
}

#[test]
fn centerface_finds_the_astronauts_face_and_its_landmarks() {
    let model = DetectModel::load(&asset("models/centerface.onnx"), &opts(EngineChoice::Auto)).unwrap();
    assert_eq!(model.kind(), ModelKind::CenterFace);
    let r = detect_image(model, &asset("images/astronaut.png"), None).unwrap();
    assert_eq!(r.detections.len(), 1, "{:?}", r.detections);
    let face = &r.detections[0];
    assert_eq!(face.label, "face");
    let iou = bbox(face.bbox).iou(&bbox(FACE));
    assert!(iou >= 0.5, "IoU {iou:.3} with {:?}", face.bbox);
}

#[test]
fn the_annotated_image_is_written_with_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("annotated.png");
    let model = DetectModel::load(&asset("models/person-yolov8s.onnx"), &opts(EngineChoice::Auto)).unwrap();
    detect_image(model, &asset("images/astronaut.png"), Some(&out)).unwrap();
    let img = framepipe_video::read_image(&out).unwrap();
    let plain = framepipe_video::read_image(&asset("images/astronaut.png")).unwrap();
    assert_eq!((img.width(), img.height()), (512, 512));
    // The box's top edge runs along y≈29 from x=0: those pixels changed, far-away ones did not.
    let changed = |x: usize, y: usize| img.pixel(x, y) != plain.pixel(x, y);
    assert!((50..300).step_by(25).all(|x| changed(x, 29) || changed(x, 30) || changed(x, 28)));
    assert!(!changed(450, 100));
}

#[test]
fn a_model_that_is_not_a_detector_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("affine.onnx");
    std::fs::write(&path, framepipe_infer::testing::affine_model(4, 2.0, 1.0)).unwrap();
    let err = DetectModel::load(&path, &opts(EngineChoice::Tract)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AppError::Model { .. }), "{err:?}");
    assert!(msg.contains("affine.onnx") && msg.contains("unrecognised outputs"), "{msg}");

    let missing = dir.path().join("nope.onnx");
    let msg = DetectModel::load(&missing, &opts(EngineChoice::Auto)).unwrap_err().to_string();
    assert!(msg.contains("nope.onnx"), "{msg}");

    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"definitely not protobuf").unwrap();
    let msg = DetectModel::load(&garbage, &opts(EngineChoice::Auto)).unwrap_err().to_string();
    assert!(msg.contains("garbage.onnx"), "{msg}");
}

#[test]
fn a_static_input_of_another_size_is_refused_before_anything_runs() {
    let o = ModelOptions { input_size: Some((320, 320)), ..opts(EngineChoice::Tract) };
    let msg = DetectModel::load(&asset("models/person-yolov8s.onnx"), &o).unwrap_err().to_string();
    assert!(msg.contains("[1, 3, 640, 640]") && msg.contains("[1, 3, 320, 320]"), "{msg}");
}
