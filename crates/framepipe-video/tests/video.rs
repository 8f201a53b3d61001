//! Decoding, writing and the sample video, on real files made by the tests.

use std::path::PathBuf;

use framepipe_video::sample::{make_sample_video, SampleSpec};
use framepipe_video::{read_image, SourceSpec, VideoError, VideoSink, VideoSource};
use framepipe_vision::{Frame, PixelFormat};

fn asset(rel: &str) -> PathBuf {
    let root = std::env::var_os("FRAMEPIPE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets"));
    let p = root.join(rel);
    assert!(p.exists(), "{} is missing: run scripts/fetch-assets.sh", p.display());
    p
}

fn photos() -> Vec<PathBuf> {
    vec![asset("images/astronaut.png"), asset("images/camera.png")]
}

fn small() -> SampleSpec {
    SampleSpec { width: 320, height: 180, fps: 30.0, frames: 24 }
}

fn read_all(path: &std::path::Path) -> (Vec<Vec<u8>>, Vec<VideoError>) {
    let mut src = VideoSource::open(&SourceSpec::File(path.to_path_buf()), 4).unwrap();
    let (mut frames, mut errors) = (vec![], vec![]);
    while let Some(r) = src.read_frame() {
        match r {
            Ok(f) => frames.push(f.data().to_vec()),
            Err(e) => errors.push(e),
        }
    }
    (frames, errors)
}

#[test]
fn the_sample_video_is_made_reproducibly_and_decodes_frame_exact_in_count() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.mp4"), dir.path().join("b.mp4"));
    assert_eq!(make_sample_video(&a, &photos(), small()).unwrap(), 24);
    assert_eq!(make_sample_video(&b, &photos(), small()).unwrap(), 24);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same input, same bytes");

    let src = VideoSource::open(&SourceSpec::File(a.clone()), 4).unwrap();
    let info = src.info().clone();
    assert_eq!((info.width, info.height, info.frames), (320, 180, Some(24)));
    assert!((info.fps.unwrap() - 30.0).abs() < 0.01);
    let (frames, errors) = read_all(&a);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(frames.len(), 24);
    // Things move: consecutive frames differ.
    assert!(frames.windows(2).all(|w| w[0] != w[1]));
    // And the photos are there: the frame is not just the background.
    let bright = frames[0].iter().filter(|&&v| v > 120).count();
    assert!(bright > frames[0].len() / 10, "{bright}");
}

#[test]
fn frames_are_decoded_into_the_pool_without_new_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.avi");
    make_sample_video(&path, &photos(), small()).unwrap();
    let mut src = VideoSource::open(&SourceSpec::File(path), 3).unwrap();
    let mut n = 0;
    while let Some(f) = src.read_frame() {
        let f = f.unwrap();
        assert_eq!((f.width(), f.height(), f.format()), (320, 180, PixelFormat::Bgr8));
        n += 1;
    }
    assert_eq!(n, 24);
    assert_eq!((src.pool().created(), src.pool().misses()), (3, 0));
}

#[test]
fn limit_stops_early() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.mp4");
    make_sample_video(&path, &photos(), small()).unwrap();
    let mut src = VideoSource::open(&SourceSpec::File(path), 2).unwrap().with_limit(Some(5));
    let mut n = 0;
    while let Some(f) = src.read_frame() {
        f.unwrap();
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn bad_files_get_errors_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mp4");
    let e = VideoSource::open(&SourceSpec::File(missing.clone()), 2).err().unwrap();
    assert!(matches!(e, VideoError::NotFound(_)));
    assert!(e.to_string().contains("missing.mp4"), "{e}");

    for (name, bytes) in
        [("empty.mp4", vec![]), ("garbage.mp4", (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect())]
    {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = VideoSource::open(&SourceSpec::File(p), 2).err().unwrap();
        assert!(matches!(e, VideoError::Open { .. } | VideoError::NoFrames(_)), "{e:?}");
        assert!(e.to_string().contains(name), "{e}");
    }
    let e = VideoSource::open(&SourceSpec::File(dir.path().to_path_buf()), 2).err().unwrap();
    assert!(e.to_string().contains("directory"), "{e}");
}

#[test]
fn a_truncated_file_delivers_its_frames_then_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.avi");
    make_sample_video(&path, &photos(), SampleSpec { frames: 40, ..small() }).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    match VideoSource::open(&SourceSpec::File(path.clone()), 2) {
        Err(e) => panic!("a half file should still open: {e}"),
        Ok(_) => {
            let (frames, errors) = read_all(&path);
            assert!(!frames.is_empty() && frames.len() < 40, "{}", frames.len());
            assert_eq!(errors.len(), 1, "{errors:?}");
            let msg = errors[0].to_string();
            assert!(msg.contains("cut.avi") && msg.contains("truncated"), "{msg}");
        }
    }
}

#[test]
fn images_and_sinks_refuse_bad_input_clearly() {
    let astronaut = read_image(&asset("images/astronaut.png")).unwrap();
    assert_eq!((astronaut.width(), astronaut.height(), astronaut.format()), (512, 512, PixelFormat::Bgr8));
    let gray = read_image(&asset("images/camera.png")).unwrap();
    assert_eq!(gray.format(), PixelFormat::Bgr8, "gray images come out as BGR");

    let dir = tempfile::tempdir().unwrap();
    let e = read_image(&dir.path().join("nope.png")).unwrap_err();
    assert!(e.to_string().contains("nope.png"), "{e}");
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    assert!(read_image(&junk).unwrap_err().to_string().contains("junk.png"));

    let e = VideoSink::create(&dir.path().join("x.gif"), 30.0, 64, 64).err().unwrap();
    assert!(e.to_string().contains(".gif"), "{e}");
    let mut sink = VideoSink::create(&dir.path().join("x.mp4"), 30.0, 64, 64).unwrap();
    let wrong = Frame::new(32, 32, PixelFormat::Bgr8).unwrap();
    let e = sink.write(wrong.as_ref()).unwrap_err();
    assert!(e.to_string().contains("32x32") && e.to_string().contains("64x64"), "{e}");
}

#[test]
fn a_video_with_zero_frames_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.avi");
    let sink = VideoSink::create(&path, 30.0, 64, 64).unwrap();
    assert_eq!(sink.finish().unwrap(), 0);
    let e = VideoSource::open(&SourceSpec::File(path), 2).err().expect("zero frames must not open as a video");
    assert!(matches!(e, VideoError::NoFrames(_) | VideoError::Open { .. }), "{e:?}");
    assert!(e.to_string().contains("empty.avi"), "{e}");
}
