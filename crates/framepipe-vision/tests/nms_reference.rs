//! The optimised NMS against a naive textbook implementation on many random
//! candidate sets, plus the invariants every NMS result must satisfy.

use framepipe_vision::{BBox, Detection, Nms, NmsConfig};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn random_dets(rng: &mut Rng, n: usize, classes: u32) -> Vec<Detection> {
    (0..n)
        .map(|_| {
            let x = rng.next() * 100.0;
            let y = rng.next() * 100.0;
            let w = rng.next() * 30.0;
            let h = rng.next() * 30.0;
            Detection {
                class_id: (rng.next() * classes as f32) as u32 % classes,
                // coarse scores so ties happen
                score: (rng.next() * 20.0).floor() / 20.0,
                bbox: BBox::new(x, y, x + w, y + h),
                landmarks: None,
            }
        })
        .collect()
}

/// Textbook greedy NMS, written for clarity: stable sort by score, then
/// suppress every later box of the same class (or any class) with IoU > thr.
fn naive(dets: &[Detection], thr: f32, agnostic: bool, max_det: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..dets.len()).collect();
    order.sort_by(|&a, &b| dets[b].score.partial_cmp(&dets[a].score).unwrap());
    let mut suppressed = vec![false; dets.len()];
    let mut keep = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        if keep.len() == max_det {
            break;
        }
        for &j in &order[pos + 1..] {
            if (agnostic || dets[i].class_id == dets[j].class_id) && iou(&dets[i].bbox, &dets[j].bbox) > thr {
                suppressed[j] = true;
            }
        }
    }
    keep
}

fn iou(a: &BBox, b: &BBox) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = iw * ih;
    let union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[test]
fn matches_naive_greedy_nms() {
    let mut rng = Rng(12345);
    let mut keep = Vec::new();
    let mut checked = 0;
    for round in 0..300 {
        let n = (rng.next() * 120.0) as usize;
        let classes = 1 + round % 4;
        let dets = random_dets(&mut rng, n, classes);
        // Thresholds away from the exact IoU values of random boxes.
        let thr = [0.3, 0.45, 0.7][round as usize % 3];
        let agnostic = round % 5 == 0;
        let max_det = if round % 7 == 0 { 5 } else { 300 };
        let mut nms = Nms::new(NmsConfig {
            iou_threshold: thr,
            class_agnostic: agnostic,
            max_detections: max_det,
            max_candidates: 30_000,
        })
        .unwrap();
        nms.keep_indices(&dets, &mut keep);
        let want = naive(&dets, thr, agnostic, max_det);
        assert_eq!(keep, want, "round {round}: n={n} classes={classes} thr={thr} agnostic={agnostic}");
        checked += keep.len();

        // Invariants: sorted by score, no kept pair violates the threshold, and
        // every dropped box is explained by a kept box with a score at least as high
        // (unless the max_det cap stopped the scan).
        for w in keep.windows(2) {
            assert!(dets[w[0]].score >= dets[w[1]].score);
        }
        for (a, &i) in keep.iter().enumerate() {
            for &j in &keep[a + 1..] {
                if agnostic || dets[i].class_id == dets[j].class_id {
                    assert!(iou(&dets[i].bbox, &dets[j].bbox) <= thr);
                }
            }
        }
        if keep.len() < max_det {
            for (j, d) in dets.iter().enumerate() {
                if keep.contains(&j) {
                    continue;
                }
                let explained = keep.iter().any(|&i| {
                    dets[i].score >= d.score
                        && (agnostic || dets[i].class_id == d.class_id)
                        && iou(&dets[i].bbox, &d.bbox) > thr
                });
                assert!(explained, "round {round}: box {j} dropped without cause");
            }
        }
    }
    assert!(checked > 1000, "the random sets exercised too little: {checked}");
}
