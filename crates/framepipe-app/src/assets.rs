//! Where the project's fetched assets live: `$FRAMEPIPE_ASSETS`, else `./assets`, else the `assets`
//! folder of the source tree the binary was built from.

use std::path::PathBuf;

use crate::AppError;

/// The assets folder.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FRAMEPIPE_ASSETS") {
        return PathBuf::from(d);
    }
    let local = PathBuf::from("assets");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn existing(what: &'static str, rel: &str) -> Result<PathBuf, AppError> {
    let path = dir().join(rel);
    if path.exists() {
        Ok(path)
    } else {
        Err(AppError::MissingAsset { what, path })
    }
}

/// The default model: the YOLOv8s person detector (classes Normal, Fall).
pub fn person_detector() -> Result<PathBuf, AppError> {
    existing("the person detector model", "models/person-yolov8s.onnx")
}

/// The CenterFace face detector.
pub fn face_detector() -> Result<PathBuf, AppError> {
    existing("the face detector model", "models/centerface.onnx")
}

/// The models known by name (`--model person-detector`), with their files under the assets folder.
pub const MODEL_NAMES: &[(&str, &str)] = &[
    ("person-detector", "models/person-yolov8s.onnx"),
    ("person", "models/person-yolov8s.onnx"),
    ("centerface", "models/centerface.onnx"),
    ("face-detector", "models/centerface.onnx"),
    ("face", "models/centerface.onnx"),
];

/// A model given as a file or by name: an existing file is taken as is; otherwise a known name
/// ([`MODEL_NAMES`]) is looked up in the assets folder; otherwise the path is returned unchanged (and
/// loading it names it).
pub fn model(arg: &std::path::Path) -> Result<PathBuf, AppError> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    match MODEL_NAMES.iter().find(|(name, _)| arg.as_os_str() == *name) {
        Some((_, rel)) => existing("a named model", rel),
        None => Ok(arg.to_path_buf()),
    }
}

/// A test photo (`astronaut.png` or `camera.png`).
pub fn image(name: &str) -> Result<PathBuf, AppError> {
    existing("a test photo", &format!("images/{name}"))
}

/// The sample video (made by `scripts/make-sample-video.sh` / `framepipe sample-video`).
pub fn sample_video() -> Result<PathBuf, AppError> {
    existing("the sample video", "sample.mp4")
}

/// Where the sample video is written.
pub fn sample_video_path() -> PathBuf {
    dir().join("sample.mp4")
}
