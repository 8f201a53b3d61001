//! Helpers shared by the CLI's integration tests: the binary, the fetched assets, the sample video.
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `framepipe` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_framepipe"))
}

/// Runs the command to completion.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the framepipe binary runs")
}

/// The command's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fetched asset (`FRAMEPIPE_ASSETS`, else the repository's `assets/`); it must exist.
pub fn asset(rel: &str) -> PathBuf {
    let root = std::env::var_os("FRAMEPIPE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets"));
    let p = root.join(rel);
    assert!(p.exists(), "{} is missing: run scripts/setup.sh", p.display());
    p
}

/// The sample video (`assets/sample.mp4`), made from the test photos if it is missing (as
/// `framepipe sample-video` makes it; written to a temporary name and renamed, so that concurrent
/// test binaries never see half a file).
pub fn sample_video() -> PathBuf {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let images = asset("images/astronaut.png");
    let dir = images.parent().and_then(|p| p.parent()).unwrap().to_path_buf();
    let path = dir.join("sample.mp4");
    if !path.exists() {
        let tmp = dir.join(format!("sample.{}.tmp.mp4", std::process::id()));
        let photos = [images, asset("images/camera.png")];
        framepipe_video::sample::make_sample_video(&tmp, &photos, Default::default()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}
