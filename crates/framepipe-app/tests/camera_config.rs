//! Node config files: the shipped ones load, every field has a default, and every mistake is an
//! error that names the field.

use std::path::{Path, PathBuf};

use framepipe_app::config::NodeConfig;
use framepipe_video::SourceSpec;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn err(text: &str) -> String {
    match NodeConfig::from_toml_str(text).and_then(|c| c.resolve().map(|_| c)) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_shipped_config_loads_and_resolves() {
    let mut n = 0;
    for entry in std::fs::read_dir(configs()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let cfg = NodeConfig::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        cfg.resolve().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 4, "configs/ holds {n} configs");
}

#[test]
fn defaults_toml_is_exactly_the_defaults_and_an_empty_file_too() {
    let cfg = NodeConfig::from_file(&configs().join("defaults.toml")).unwrap();
    assert_eq!(cfg, NodeConfig::default(), "configs/defaults.toml and NodeConfig::default() disagree");
    assert_eq!(NodeConfig::from_toml_str("").unwrap(), NodeConfig::default());
    let r = NodeConfig::default().resolve().unwrap();
    assert_eq!(r.spec, SourceSpec::Camera(0));
    assert_eq!(r.pipeline.admission, framepipe::Admission::KeepLatest);
    assert_eq!((r.pipeline.queue, r.pipeline.replicas.infer), (1, 1));
    assert!(r.serve.is_none() && r.duration.is_none() && r.pipeline.deadline.is_none());
    assert_eq!(r.reconnect.attempts, 0);
    assert_eq!(r.window.as_secs(), 10);
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("robot");
    std::fs::create_dir(&sub).unwrap();
    let file = sub.join("node.toml");
    std::fs::write(&file, "[source]\nuri = \"clips/a.mp4\"\n[model]\npath = \"../models/m.onnx\"\n").unwrap();
    let cfg = NodeConfig::from_file(&file).unwrap();
    assert_eq!(Path::new(&cfg.source.uri), sub.join("clips/a.mp4"));
    assert_eq!(cfg.model.path.unwrap(), sub.join("../models/m.onnx"));
    // URLs, cameras and pipelines are left alone.
    std::fs::write(&file, "[source]\nuri = \"rtsp://cam/1\"\n").unwrap();
    assert_eq!(NodeConfig::from_file(&file).unwrap().source.uri, "rtsp://cam/1");
}

#[test]
fn unknown_fields_are_refused_by_name() {
    for (text, field) in [
        ("[pipeline]\nadmision = \"block\"\n", "admision"),
        ("[source]\nurl = \"0\"\n", "url"),
        ("[source.reconnect]\ntries = 3\n", "tries"),
        ("[pipeline.replicas]\ngpu = 2\n", "gpu"),
        ("[viewer]\nenabled = true\n", "viewer"),
    ] {
        let e = err(text);
        assert!(e.contains(field) && e.contains("unknown field"), "{text}: {e}");
    }
}

#[test]
fn bad_values_are_refused_by_field() {
    for (text, field) in [
        ("[pipeline]\nadmission = \"sometimes\"\n", "pipeline.admission"),
        ("[pipeline]\ndeadline_ms = 0\n", "pipeline.deadline_ms"),
        ("[pipeline]\nqueue = 0\n", "pipeline.queue"),
        ("[pipeline]\nmax_in_flight = 0\n", "pipeline.max_in_flight"),
        ("[pipeline.replicas]\ninfer = 0\n", "pipeline.replicas.infer"),
        ("[pipeline.pins]\ninfer = [4096]\n", "pipeline.pins.infer"),
        ("[model]\nengine = \"gpu\"\n", "model.engine"),
        ("[model]\nthreads = 0\n", "model.threads"),
        ("[model]\nconf = 1.5\n", "model.conf"),
        ("[source]\nuri = \"/dev/videoX\"\n", "source.uri"),
        ("[source]\nuri = \"videotestsrc ! fakesink\"\n", "source.uri"),
        ("[source]\nread_timeout_ms = 0\n", "source.read_timeout_ms"),
        ("[source]\nmax_frames = 0\n", "source.max_frames"),
        ("[source]\nuri = \"clip.mp4\"\nreconnect = { attempts = 3 }\n", "source.reconnect.attempts"),
        ("[serve]\nenabled = true\naddr = \"0.0.0.0:8080\"\n", "serve.addr"),
        ("[serve]\nenabled = true\naddr = \"nowhere\"\n", "serve.addr"),
        ("[serve]\nenabled = true\nquality = 0\n", "serve.quality"),
        ("[run]\nduration_s = -1.0\n", "run.duration_s"),
        ("[run]\nwindow_s = 0.0\n", "run.window_s"),
    ] {
        let e = err(text);
        assert!(e.contains(field), "{text}: {e}");
    }
    // Wrong types: toml's message shows the line, which names the field.
    let e = err("[pipeline]\ndeadline_ms = \"fast\"\n");
    assert!(e.contains("deadline_ms") && e.contains("line 2"), "{e}");
    // The address refusal says how to allow it.
    assert!(err("[serve]\nenabled = true\naddr = \"0.0.0.0:8080\"\n").contains("allow_remote"));
    // With the explicit flag, a remote address is accepted.
    NodeConfig::from_toml_str("[serve]\nenabled = true\naddr = \"0.0.0.0:8080\"\nallow_remote = true\n")
        .unwrap()
        .resolve()
        .unwrap();
}
