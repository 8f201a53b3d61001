//! `framepipe bench --tune`, end to end: the plan is printed with its reasons, written as a config
//! that loads back (and that the bench and the config parser accept), reported in the JSON, and
//! the tuned run delivers every frame in order.

mod common;
use common::{bin, run, stderr};

use std::path::{Path, PathBuf};

use framepipe_app::config::NodeConfig;
use serde_json::Value;

fn make_video(dir: &Path) -> PathBuf {
    let path = dir.join("tune.mp4");
    let o = run(bin().args(["sample-video", "--out", path.to_str().unwrap(), "--size", "320x180", "--seconds", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    path
}

#[test]
fn bench_tune_prints_writes_and_reports_the_plan_and_runs_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let video = make_video(dir.path());
    let out = dir.path().join("plan.toml");
    let o = run(bin().args([
        "bench",
        video.to_str().unwrap(),
        "--tune",
        "--tune-out",
        out.to_str().unwrap(),
        "--mode",
        "pipelined",
        "--frames",
        "12",
        "--json",
        "-",
    ]));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // The plan and why, on stderr (stdout holds the JSON).
    assert!(err.contains("tuned plan: replicas pre="), "{err}");
    for why in ["why: measured", "why: serial:", "why: chosen:", "why: pins:", "why: queues:"] {
        assert!(err.contains(why), "no `{why}` in:\n{err}");
    }
    assert!(err.contains(out.to_str().unwrap()), "the output names the plan's path:\n{err}");

    // The plan file loads back through the config parser and resolves.
    let cfg = NodeConfig::from_file(&out).unwrap();
    let resolved = cfg.resolve().unwrap();
    assert!(!cfg.pipeline.tune, "the written plan is the result, not a request to tune again");
    assert_eq!(cfg.pipeline.admission, "block");
    assert_eq!(cfg.pipeline.queue, 1);
    assert!(cfg.source.uri.ends_with("tune.mp4"), "{}", cfg.source.uri);

    // The JSON carries the plan, the measurements and the prediction.
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &v["pipelined"];
    let t = &m["tuned"];
    assert!(t.is_object(), "no `tuned` object in {m}");
    let plan = &t["plan"];
    let r = &plan["replicas"];
    for (stage, field) in [("pre", r["pre"].as_u64()), ("infer", r["infer"].as_u64()), ("post", r["post"].as_u64())] {
        assert!(field.unwrap() >= 1, "{stage}");
    }
    assert_eq!(r["infer"].as_u64().unwrap() as usize, cfg.pipeline.replicas.infer);
    assert_eq!(resolved.pipeline.replicas.infer, cfg.pipeline.replicas.infer);
    assert_eq!(plan["threads"].as_u64().unwrap() as usize, cfg.model.threads);
    let sum = r["pre"].as_u64().unwrap() + r["infer"].as_u64().unwrap() + r["post"].as_u64().unwrap();
    assert_eq!(plan["max_in_flight"].as_u64(), Some(sum));
    assert_eq!(cfg.pipeline.max_in_flight, Some(sum as usize));
    for stage in ["decode", "pre", "post"] {
        assert!(t["service_us"][stage].as_f64().unwrap() > 0.0, "service_us.{stage}: {t}");
    }
    let infer = t["service_us"]["infer"].as_object().unwrap();
    assert!(!infer.is_empty() && infer.values().all(|x| x.as_f64().unwrap() > 0.0), "{t}");
    assert!(t["predicted_fps"].as_f64().unwrap() > 0.0);
    assert!(t["predicted_latency_us"].as_f64().unwrap() > 0.0);
    assert_eq!(t["config"].as_str(), out.to_str());
    assert!(!t["reasons"].as_array().unwrap().is_empty());

    // The run used the plan, and delivered every frame in order.
    let infer_stage = m["stages"].as_array().unwrap().iter().find(|s| s["name"] == "infer").unwrap();
    assert_eq!(infer_stage["replicas"], r["infer"]);
    assert_eq!(m["max_in_flight"].as_u64(), Some(sum));
    assert_eq!(m["frames_in"].as_u64(), Some(12));
    assert_eq!(m["frames_out"], m["frames_in"]);
    assert_eq!(m["processed"], m["frames_in"]);
    assert_eq!(m["lost"].as_u64(), Some(0));
    assert_eq!(m["reordered"].as_u64(), Some(0));
    assert_eq!(m["out_of_order"]["count"].as_u64(), Some(0));

    // The bench runs the written plan back without tuning again.
    let o = run(bin().args([
        "bench",
        "--config",
        out.to_str().unwrap(),
        "--mode",
        "pipelined",
        "--frames",
        "6",
        "--json",
        "-",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("tuned plan:"));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["pipelined"]["tuned"].is_null());
    assert_eq!(v["pipelined"]["frames_out"].as_u64(), Some(6));
    assert_eq!(v["pipelined"]["max_in_flight"].as_u64(), Some(sum));
}

#[test]
fn bench_config_refuses_flags_it_would_override_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[pipeline]\nqueue = 0\n").unwrap();
    let o = run(bin().args(["bench", "--config", cfg.to_str().unwrap(), "--mode", "pipelined"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pipeline.queue"), "{}", stderr(&o));
    let o = run(bin().args(["bench", "--config", cfg.to_str().unwrap(), "--replicas", "infer=2"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--replicas"), "{}", stderr(&o));
}
