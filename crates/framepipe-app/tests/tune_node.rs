//! `pipeline.tune = true`: the perception node calibrates at start, runs the plan it chose, and
//! still delivers every frame in order.

mod camera_peer;

use std::time::Duration;

use camera_peer::{heavy, sample_video, within};
use framepipe_app::config::NodeConfig;
use framepipe_app::node::PerceptionNode;

#[test]
fn a_node_with_tune_true_runs_its_plan_in_order() {
    let _g = heavy();
    within(Duration::from_secs(180), || {
        let mut cfg = NodeConfig::from_toml_str("[pipeline]\ntune = true\nadmission = \"block\"\n").unwrap();
        assert!(cfg.pipeline.tune);
        cfg.source.uri = sample_video().display().to_string();
        cfg.source.max_frames = Some(8);
        let mut node = PerceptionNode::start(&cfg).unwrap();
        let tuned = node.tuned().expect("tune = true makes a plan").clone();
        let plan = &tuned.plan;
        assert!(plan.replicas.infer >= 1 && plan.replicas.infer <= framepipe::available_cores().len().max(1));
        assert!(tuned.service.pre_us > 0.0 && tuned.service.post_us > 0.0);
        assert!(tuned.service.infer_us.iter().all(|t| t.us > 0.0));
        // A live source's pace is the camera's: the node does not time decoding.
        assert_eq!(tuned.service.decode_us, 0.0);
        assert!(tuned.render().contains("why: chosen:"));
        let mut seqs = Vec::new();
        for r in node.results() {
            assert!(r.is_processed(), "{:?}", r.error());
            seqs.push(r.seq());
        }
        assert_eq!(seqs, (0..8).collect::<Vec<_>>());
        let report = node.finish().unwrap();
        assert_eq!((report.processed, report.lost, report.reordered), (8, 0, 0));
        assert_eq!(report.max_in_flight, plan.max_in_flight);
        let infer = report.stages.as_array().unwrap().iter().find(|s| s["name"] == "infer").unwrap();
        assert_eq!(infer["replicas"].as_u64(), Some(plan.replicas.infer as u64));
        // Without `tune`, no plan.
        let mut cfg = cfg.clone();
        cfg.pipeline.tune = false;
        cfg.source.max_frames = Some(1);
        let node = PerceptionNode::start(&cfg).unwrap();
        assert!(node.tuned().is_none());
        node.finish().unwrap();
    });
}
