//! The full decode → threshold → NMS → map → clip pipeline.

use framepipe_vision::{
    BBox, Decoder, Detection, LetterboxParams, LetterboxStyle, NmsConfig, PostprocessConfig, Postprocessor,
    PreprocessConfig, TensorView, VisionError,
};

/// YOLOv8 output 1 x (4 + 2) x 5, built from (cx, cy, w, h, s0, s1) per anchor.
fn v8_tensor(anchors: &[[f32; 6]]) -> Vec<f32> {
    let n = anchors.len();
    let mut d = vec![0.0; 6 * n];
    for (i, a) in anchors.iter().enumerate() {
        for (r, v) in a.iter().enumerate() {
            d[r * n + i] = *v;
        }
    }
    d
}

const ANCHORS: [[f32; 6]; 5] = [
    [320.0, 320.0, 60.0, 30.0, 0.9, 0.0],  // a0 class 0
    [322.0, 320.0, 60.0, 30.0, 0.8, 0.0],  // a1 duplicate of a0, IoU 1740/1860
    [320.0, 320.0, 60.0, 30.0, 0.0, 0.85], // a2 same box, class 1
    [100.0, 150.0, 40.0, 40.0, 0.6, 0.0],  // a3 reaches into the top bar
    [500.0, 500.0, 10.0, 10.0, 0.1, 0.1],  // a4 below threshold
];

fn run(post: &mut Postprocessor, data: &[f32], n: usize, lb: &LetterboxParams) -> Vec<Detection> {
    let shape = [1, 6, n];
    let mut out = vec![Detection { class_id: 99, score: 9.0, bbox: BBox::default(), landmarks: None }]; // stale content must be cleared
    post.process(&[TensorView::new(&shape, data).unwrap()], lb, &mut out).unwrap();
    out
}

/// Boxes equal up to f32 rounding of the mapping (1e-3 px).
#[track_caller]
fn assert_box(got: BBox, want: BBox) {
    let d = [got.x1 - want.x1, got.y1 - want.y1, got.x2 - want.x2, got.y2 - want.y2];
    assert!(d.iter().all(|v| v.abs() < 1e-3), "got {got:?}, want {want:?}");
}

fn lb1080() -> LetterboxParams {
    LetterboxParams::compute(1920, 1080, &PreprocessConfig::new(640, 640)).unwrap()
}

#[test]
fn yolov8_pipeline_maps_and_clips_to_the_frame() {
    let data = v8_tensor(&ANCHORS);
    let dec = Decoder::from_output_shape(&[1, 6, 5], Some(2)).unwrap();
    let mut post = Postprocessor::new(dec, PostprocessConfig::default()).unwrap();
    let out = run(&mut post, &data, 5, &lb1080());
    // Input → frame: x * 3, (y - 140) * 3.
    // a0: (290, 305)-(350, 335) → (870, 495)-(1050, 585).
    // a2: same box, other class → kept (class-aware).
    // a3: (80, 130)-(120, 170) → (240, -30)-(360, 90) → y1 clipped to 0.
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!((out[0].class_id, out[0].score), (0, 0.9));
    assert_box(out[0].bbox, BBox::new(870.0, 495.0, 1050.0, 585.0));
    assert_eq!((out[1].class_id, out[1].score), (1, 0.85));
    assert_eq!(out[1].bbox, out[0].bbox);
    assert_eq!((out[2].class_id, out[2].score), (0, 0.6));
    assert_box(out[2].bbox, BBox::new(240.0, 0.0, 360.0, 90.0));

    // The same call again gives the same answer (scratch is reset).
    assert_eq!(run(&mut post, &data, 5, &lb1080()), out);

    // Model-input coordinates on request.
    let mut raw = Vec::new();
    post.process_input_coords(&[TensorView::new(&[1, 6, 5], &data).unwrap()], &mut raw).unwrap();
    assert_box(raw[2].bbox, BBox::new(80.0, 130.0, 120.0, 170.0));
}

#[test]
fn class_agnostic_and_max_detections() {
    let data = v8_tensor(&ANCHORS);
    let dec = Decoder::YoloV8 { num_classes: 2, transposed: false };
    let agnostic = PostprocessConfig {
        nms: NmsConfig { class_agnostic: true, ..NmsConfig::default() },
        ..PostprocessConfig::default()
    };
    let mut post = Postprocessor::new(dec.clone(), agnostic).unwrap();
    let out = run(&mut post, &data, 5, &lb1080());
    assert_eq!(out.iter().map(|d| d.score).collect::<Vec<_>>(), [0.9, 0.6]);

    let capped = PostprocessConfig {
        nms: NmsConfig { max_detections: 1, ..NmsConfig::default() },
        ..PostprocessConfig::default()
    };
    post.set_config(capped).unwrap();
    let out = run(&mut post, &data, 5, &lb1080());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].score, 0.9);

    // A higher threshold drops a3; a threshold of 0.05 lets a4 through.
    post.set_config(PostprocessConfig { conf_threshold: 0.7, ..PostprocessConfig::default() }).unwrap();
    assert_eq!(run(&mut post, &data, 5, &lb1080()).len(), 2);
    post.set_config(PostprocessConfig { conf_threshold: 0.05, ..PostprocessConfig::default() }).unwrap();
    assert_eq!(run(&mut post, &data, 5, &lb1080()).len(), 4);
}

#[test]
fn invalid_config_is_refused_and_old_config_kept() {
    let dec = Decoder::YoloV8 { num_classes: 2, transposed: false };
    let mut post = Postprocessor::new(dec.clone(), PostprocessConfig::default()).unwrap();
    let err =
        post.set_config(PostprocessConfig { conf_threshold: f32::NAN, ..PostprocessConfig::default() }).unwrap_err();
    assert!(err.to_string().contains("confidence threshold"), "{err}");
    assert_eq!(post.config(), &PostprocessConfig::default());
    let err = Postprocessor::new(Decoder::YoloV5 { num_classes: 0 }, PostprocessConfig::default()).unwrap_err();
    assert!(matches!(err, VisionError::InvalidConfig(_)));
    assert!(err.to_string().contains("num_classes"), "{err}");
}

#[test]
fn rtdetr_skips_nms_but_caps_and_sorts() {
    // Three identical normalised boxes: NMS would keep one; RT-DETR keeps all.
    #[rustfmt::skip]
    let data = [
        0.5, 0.5, 0.2, 0.2, 0.5, 0.0,
        0.5, 0.5, 0.2, 0.2, 0.9, 0.0,
        0.5, 0.5, 0.2, 0.2, 0.7, 0.0,
    ];
    let dec = Decoder::RtDetr { num_classes: 2, input_width: 640, input_height: 640 };
    // RT-DETR is usually fed a stretched input; 1280x720 → 640x640.
    let lb = LetterboxParams::compute(1280, 720, &PreprocessConfig::new(640, 640).with_style(LetterboxStyle::Stretch))
        .unwrap();
    let mut post = Postprocessor::new(dec, PostprocessConfig::default()).unwrap();
    let mut out = Vec::new();
    post.process(&[TensorView::new(&[1, 3, 6], &data).unwrap()], &lb, &mut out).unwrap();
    assert_eq!(out.iter().map(|d| d.score).collect::<Vec<_>>(), [0.9, 0.7, 0.5]);
    // Normalised (0.4..0.6) maps straight to the frame: x 512..768, y 288..432.
    assert_box(out[0].bbox, BBox::new(512.0, 288.0, 768.0, 432.0));

    post.set_config(PostprocessConfig {
        nms: NmsConfig { max_detections: 2, ..NmsConfig::default() },
        ..PostprocessConfig::default()
    })
    .unwrap();
    post.process(&[TensorView::new(&[1, 3, 6], &data).unwrap()], &lb, &mut out).unwrap();
    assert_eq!(out.iter().map(|d| d.score).collect::<Vec<_>>(), [0.9, 0.7]);
}

#[test]
fn centerface_landmarks_are_mapped_to_the_frame() {
    // 8x8 input → 2x2 map. One face at cell (0, 0): s0 = s1 = 4, no offsets →
    // box (0, 0)-(4, 4); landmark 0 at factors (x 0.5, y 0.25) → (2, 1).
    let plane = 4;
    let mut heat = vec![0.0f32; plane];
    heat[0] = 0.8;
    let scale = vec![0.0f32; 2 * plane];
    let offset = vec![0.0f32; 2 * plane];
    let mut lms = vec![0.0f32; 10 * plane];
    lms[0] = 0.25; // landmark 0 y factor
    lms[plane] = 0.5; // landmark 0 x factor
    let outs = [
        TensorView::new(&[1, 1, 2, 2], &heat).unwrap(),
        TensorView::new(&[1, 2, 2, 2], &scale).unwrap(),
        TensorView::new(&[1, 2, 2, 2], &offset).unwrap(),
        TensorView::new(&[1, 10, 2, 2], &lms).unwrap(),
    ];
    // A 16x32 frame stretched to 8x8: frame = input * (2, 4).
    let lb =
        LetterboxParams::compute(16, 32, &PreprocessConfig::new(8, 8).with_style(LetterboxStyle::Stretch)).unwrap();
    let dec = Decoder::CenterFace { input_width: 8, input_height: 8 };
    let mut post =
        Postprocessor::new(dec, PostprocessConfig { conf_threshold: 0.5, ..PostprocessConfig::default() }).unwrap();
    let mut out = Vec::new();
    post.process(&outs, &lb, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_box(out[0].bbox, BBox::new(0.0, 0.0, 8.0, 16.0));
    let lm = out[0].landmarks.unwrap();
    assert_eq!(lm[0], [4.0, 4.0]);
    assert_eq!(lm[1], [0.0, 0.0]);
}

#[test]
fn decode_errors_surface_from_process() {
    let dec = Decoder::YoloV8 { num_classes: 80, transposed: false };
    let mut post = Postprocessor::new(dec, PostprocessConfig::default()).unwrap();
    let data = v8_tensor(&ANCHORS);
    let mut out = Vec::new();
    let err = post.process(&[TensorView::new(&[1, 6, 5], &data).unwrap()], &lb1080(), &mut out).unwrap_err();
    assert!(err.to_string().contains("84 rows"), "{err}");
}
