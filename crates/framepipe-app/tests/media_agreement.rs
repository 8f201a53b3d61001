//! The two media backends give the same detections (issue target: boxes within 1 px on at least
//! 95% of detections): a 720p H.264 High clip with B-frames (the sample video re-encoded by
//! ffmpeg), decoded natively and by OpenCV, each frame through the person detector.
#![cfg(feature = "opencv")]

mod camera_peer;

use framepipe_app::{DetectModel, Detector, ModelOptions};
use framepipe_video::{DecoderChoice, OpenOptions, SourceSpec, VideoSource};

#[test]
fn native_and_opencv_frames_give_the_same_boxes() {
    let _g = camera_peer::heavy();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("high.mp4");
    let st = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-i"])
        .arg(camera_peer::sample_video())
        .args(["-frames:v", "40", "-c:v", "libx264", "-profile:v", "high", "-bf", "3", "-pix_fmt", "yuv420p"])
        .arg(&clip)
        .status()
        .expect("ffmpeg (scripts/setup.sh installs it)");
    assert!(st.success());
    let model = DetectModel::load(&camera_peer::asset("models/person-yolov8s.onnx"), &ModelOptions::default()).unwrap();
    let boxes = |decoder| {
        let opts = OpenOptions { decoder, ..Default::default() };
        let mut src = VideoSource::open_with(&SourceSpec::File(clip.clone()), 2, &opts).unwrap();
        let mut det = Detector::new(model.clone()).unwrap();
        let mut all = Vec::new();
        while let Some(f) = src.read_frame() {
            let f = f.unwrap();
            all.push(det.detect(f.as_ref()).unwrap().detections.to_vec());
        }
        all
    };
    let (native, cv) = (boxes(DecoderChoice::Native), boxes(DecoderChoice::OpenCv));
    assert_eq!(native.len(), 40);
    assert_eq!(cv.len(), 40);
    let (mut total, mut close) = (0usize, 0usize);
    for (a, b) in native.iter().zip(&cv) {
        for d in a {
            total += 1;
            let near = b.iter().any(|e| {
                e.class_id == d.class_id
                    && [(d.bbox.x1, e.bbox.x1), (d.bbox.y1, e.bbox.y1), (d.bbox.x2, e.bbox.x2), (d.bbox.y2, e.bbox.y2)]
                        .iter()
                        .all(|(p, q)| (p - q).abs() <= 1.0)
            });
            close += usize::from(near);
        }
    }
    assert!(total >= 40, "the sample has people in every frame: {total} detections");
    let share = close as f64 / total as f64;
    eprintln!("agreement: {close} of {total} native detections within 1 px of OpenCV's ({:.1}%)", share * 100.0);
    assert!(share >= 0.95, "{close} of {total}");
}
