//! Threads: names, pinning, real-time priority, and the spin policy.

mod common;

use std::time::Duration;

use common::{within, Injected};
use framepipe::{
    available_cores, BuildError, IterSource, Pace, Pin, Pipeline, Priority, SourceConfig, StageConfig, WaitStrategy,
};

#[test]
fn each_stage_runs_on_a_thread_named_after_it() {
    within(Duration::from_secs(10), || {
        let mut p = Pipeline::<u32>::builder()
            .stage_fn("pre", |_: u32| Ok::<_, Injected>(std::thread::current().name().map(String::from)))
            .stage_fn(StageConfig::new("infer").replicas(2), |a: Option<String>| {
                Ok::<_, Injected>((a, std::thread::current().name().map(String::from)))
            })
            .build()
            .unwrap();
        let input = p.input();
        std::thread::spawn(move || (0..20).for_each(|i| input.push(i).unwrap()));
        let names: Vec<_> = p.iter().take(20).map(|e| e.into_result().unwrap()).collect();
        for (pre, infer) in &names {
            assert_eq!(pre.as_deref(), Some("pre"));
            assert!(matches!(infer.as_deref(), Some("infer#0") | Some("infer#1")), "{infer:?}");
        }
    });
}

#[test]
fn a_core_that_does_not_exist_is_a_build_error() {
    let err = Pipeline::<u32>::builder()
        .stage_fn(StageConfig::new("pre").pin(Pin::core(4096)), |x: u32| Ok::<_, Injected>(x))
        .build()
        .unwrap_err();
    match &err {
        BuildError::NoSuchCore { stage, core, available } => {
            assert_eq!((stage.as_str(), *core), ("pre", 4096));
            assert_eq!(available, &available_cores());
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("core 4096 does not exist"), "{err}");
    let err = Pipeline::<u32>::builder()
        .stage_fn(StageConfig::new("infer").replicas(3).pin(Pin::PerReplica(vec![vec![0], vec![0]])), |x: u32| {
            Ok::<_, Injected>(x)
        })
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::PinCount { pins: 2, replicas: 3, .. }), "{err}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_pinned_stage_runs_only_on_its_core() {
    within(Duration::from_secs(10), || {
        let core = *available_cores().last().unwrap();
        let mut p = Pipeline::<u32>::builder()
            .stage_fn(StageConfig::new("pinned").pin(Pin::core(core)), |_: u32| {
                // SAFETY: sched_getcpu has no preconditions.
                Ok::<_, Injected>(unsafe { libc::sched_getcpu() })
            })
            .build()
            .unwrap();
        let input = p.input();
        std::thread::spawn(move || (0..50).for_each(|i| input.push(i).unwrap()));
        let cpus: Vec<i32> = p.iter().take(50).map(|e| e.into_result().unwrap()).collect();
        assert!(cpus.iter().all(|&c| c == core as i32), "ran on {cpus:?}, pinned to {core}");
        assert!(p.report().notices.is_empty(), "{:?}", p.report().notices);
    });
}

#[cfg(target_os = "linux")]
#[test]
fn real_time_priority_is_either_granted_or_reported() {
    within(Duration::from_secs(10), || {
        let mut p = Pipeline::<u32>::builder()
            .stage_fn(StageConfig::new("rt").priority(Priority::Realtime(10)), |_: u32| {
                // SAFETY: sched_getscheduler(0) queries the calling thread and has no preconditions.
                Ok::<_, Injected>(unsafe { libc::sched_getscheduler(0) })
            })
            .build()
            .unwrap();
        let input = p.input();
        input.push(0).unwrap();
        let policy = p.recv().unwrap().into_result().unwrap();
        let notices = p.report().notices;
        let refused = notices.iter().any(|n| n.contains("`rt`") && n.contains("refused"));
        assert!(
            policy == libc::SCHED_FIFO || refused,
            "policy {policy} and no notice: the priority request was silently ignored ({notices:?})"
        );
        assert!(!(policy == libc::SCHED_FIFO && refused));
    });
}

#[test]
fn spinning_threads_that_would_share_a_core_fall_back_to_parking_and_say_so() {
    within(Duration::from_secs(20), || {
        let core = available_cores()[0];
        // Both ends of the link into `b` pinned to one core: spinning there would starve the producer.
        let mut p = Pipeline::<u32>::builder()
            .stage_fn(StageConfig::new("a").pin(Pin::core(core)), |x: u32| Ok::<_, Injected>(x))
            .stage_fn(StageConfig::new("b").pin(Pin::core(core)).wait(WaitStrategy::Spin), |x: u32| {
                Ok::<_, Injected>(x)
            })
            // Not pinned at all.
            .stage_fn(StageConfig::new("c").wait(WaitStrategy::Spin), |x: u32| Ok::<_, Injected>(x))
            .build()
            .unwrap();
        let r = p.report();
        let into = |to: &str| r.links.iter().find(|l| l.to == to).unwrap().clone();
        assert_eq!(into("b").wait, WaitStrategy::hybrid());
        assert_eq!(into("c").wait, WaitStrategy::hybrid());
        assert!(r.notices.iter().any(|n| n.contains("`b`") && n.contains(&format!("core {core}"))), "{:?}", r.notices);
        assert!(r.notices.iter().any(|n| n.contains("`c`") && n.contains("not pinned")), "{:?}", r.notices);
        // And the pipeline still works.
        let input = p.input();
        std::thread::spawn(move || (0..500).for_each(|i| input.push(i).unwrap()));
        let got: Vec<u32> = p.iter().take(500).map(|e| e.into_result().unwrap()).collect();
        assert_eq!(got, (0..500).collect::<Vec<_>>());
    });
}

#[test]
fn spin_is_granted_between_threads_on_distinct_dedicated_cores() {
    let cores = available_cores();
    if cores.len() < 2 {
        eprintln!("one core only: nothing to grant");
        return;
    }
    within(Duration::from_secs(20), move || {
        let mut p = Pipeline::<u32>::builder()
            .stage_fn(StageConfig::new("a").pin(Pin::core(cores[0])), |x: u32| Ok::<_, Injected>(x))
            .stage_fn(StageConfig::new("b").pin(Pin::core(cores[1])).wait(WaitStrategy::Spin), |x: u32| {
                Ok::<_, Injected>(x)
            })
            .build()
            .unwrap();
        let r = p.report();
        let link = r.links.iter().find(|l| l.to == "b").unwrap();
        assert_eq!((link.wait, link.ring), (WaitStrategy::Spin, true));
        assert!(r.notices.is_empty(), "{:?}", r.notices);
        let input = p.input();
        std::thread::spawn(move || (0..2000).for_each(|i| input.push(i).unwrap()));
        let got: Vec<u32> = p.iter().take(2000).map(|e| e.into_result().unwrap()).collect();
        assert_eq!(got, (0..2000).collect::<Vec<_>>());
    });
}

#[derive(Debug, thiserror::Error)]
#[error("bad frame {0}")]
struct BadFrame(u32);

struct Flaky(u32);
impl framepipe::Source for Flaky {
    type Item = u32;
    type Error = BadFrame;
    fn next(&mut self) -> Option<Result<u32, BadFrame>> {
        self.0 += 1;
        match self.0 {
            n if n > 10 => None,
            4 => Some(Err(BadFrame(4))),
            n => Some(Ok(n)),
        }
    }
}

#[test]
fn a_source_runs_on_its_own_thread_and_its_errors_travel_in_their_slots() {
    within(Duration::from_secs(10), || {
        let mut p = Pipeline::<u32>::builder()
            .source(SourceConfig::new("decode"), Flaky(0))
            .stage_fn("double", |x: u32| Ok::<_, Injected>(x * 2))
            .build()
            .unwrap();
        let outs: Vec<_> = p.iter().map(|e| (e.seq(), e.into_result().map_err(|t| t.to_string()))).collect();
        let r = p.close().unwrap();
        assert_eq!(outs.len(), 10);
        assert_eq!(outs[0], (0, Ok(2)));
        assert_eq!(outs[3].1, Err("source failed: bad frame 4".to_string()));
        assert_eq!(outs[9], (9, Ok(20)));
        assert_eq!((r.frames_out, r.errored, r.source_errors, r.processed), (10, 1, 1, 9));
        let src = &r.stages[0];
        assert!(src.source && src.name == "decode");
        assert_eq!((src.processed, src.errored), (9, 1));
    });
}

#[test]
fn a_paced_source_runs_at_its_period() {
    within(Duration::from_secs(10), || {
        let t = std::time::Instant::now();
        let mut p = Pipeline::<u32>::builder()
            .source(SourceConfig::new("camera").pace(Pace::fps(100.0)), IterSource(0..20u32))
            .stage_fn("id", |x: u32| Ok::<_, Injected>(x))
            .build()
            .unwrap();
        let n = p.iter().count();
        assert_eq!(n, 20);
        // 20 frames at 100 fps take at least 19 periods (behaviour, not a benchmark: a lower bound).
        assert!(t.elapsed() >= Duration::from_millis(190), "{:?}", t.elapsed());
    });
}
