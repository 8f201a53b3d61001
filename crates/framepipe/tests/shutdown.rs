//! Shutdown and faults: close mid-flight, a panic in every stage position, a slow consumer, a stage
//! that never returns until it is cancelled. Every test runs under a time limit, so a hang fails.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{busy_for, within, Injected};
use framepipe::{BuildError, Pipeline, PipelineError, StageConfig, Tombstone};

fn three_stages(panic_at: Option<(usize, u64)>, replicas: [usize; 3]) -> Pipeline<u64, u64> {
    let stage = move |k: usize| {
        move |x: u64| {
            busy_for(100);
            if panic_at == Some((k, x)) {
                panic!("boom in stage {k} on {x}");
            }
            Ok::<u64, Injected>(x)
        }
    };
    Pipeline::<u64>::builder()
        .stage_fn(StageConfig::new("a").replicas(replicas[0]), stage(0))
        .stage_fn(StageConfig::new("b").replicas(replicas[1]), stage(1))
        .stage_fn(StageConfig::new("c").replicas(replicas[2]), stage(2))
        .build()
        .unwrap()
}

#[test]
fn close_mid_flight_drains_every_admitted_frame_and_joins() {
    within(Duration::from_secs(20), || {
        let p = three_stages(None, [1, 2, 1]);
        let input = p.input();
        let feeder = std::thread::spawn(move || {
            let mut pushed = 0u64;
            while input.push(pushed).is_ok() {
                pushed += 1;
            }
            pushed
        });
        std::thread::sleep(Duration::from_millis(30));
        let report = p.close().unwrap();
        let pushed = feeder.join().unwrap();
        assert!(pushed > 0);
        assert_eq!(report.frames_in, pushed, "every accepted push was counted");
        assert_eq!(report.admitted, pushed, "block never drops");
        assert_eq!((report.frames_out, report.lost), (pushed, 0));
    });
}

#[test]
fn a_panic_in_any_stage_position_is_reported_with_its_stage_and_sequence_number() {
    for replicas in [[1, 1, 1], [2, 3, 2]] {
        for k in 0..3 {
            within(Duration::from_secs(20), move || {
                let mut p = three_stages(Some((k, 17)), replicas);
                let input = p.input();
                let feeder = std::thread::spawn(move || {
                    let mut n = 0u64;
                    while n < 10_000 && input.push(n).is_ok() {
                        n += 1;
                    }
                    n
                });
                let mut outs = Vec::new();
                while let Some(e) = p.recv() {
                    outs.push(e);
                }
                let pushed = feeder.join().unwrap();
                assert!(pushed < 10_000, "admission stopped after the panic");
                // Order kept, no hole, up to the end.
                assert!(outs.iter().enumerate().all(|(i, e)| e.seq() == i as u64));
                let panicked = &outs[17];
                match panicked.result() {
                    Err(Tombstone::Panicked { stage, message }) => {
                        assert_eq!(&stage[..], ["a", "b", "c"][k]);
                        assert!(message.contains("boom"), "{message}");
                    }
                    other => panic!("frame 17: {other:?}"),
                }
                let err = p.close().unwrap_err();
                match &err {
                    PipelineError::StagePanicked { stage, seq, .. } => {
                        assert_eq!((stage.as_str(), *seq), (["a", "b", "c"][k], 17));
                    }
                    other => panic!("{other}"),
                }
                let r = err.report();
                assert_eq!(r.lost, 0);
                assert_eq!(r.frames_out, r.admitted);
            });
        }
    }
}

#[test]
fn a_slow_consumer_pushes_back_without_loss() {
    within(Duration::from_secs(20), || {
        let mut p = three_stages(None, [1, 1, 1]);
        let input = p.input();
        let feeder = std::thread::spawn(move || (0..200u64).for_each(|i| input.push(i).unwrap()));
        let mut got = Vec::new();
        for e in p.iter().take(200) {
            std::thread::sleep(Duration::from_micros(500));
            got.push(e.into_result().unwrap());
        }
        feeder.join().unwrap();
        let r = p.close().unwrap();
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        assert_eq!((r.dropped, r.lost), (0, 0));
        // The cap bounds live frames even though the consumer is slow.
        assert!(r.max_in_flight < 20);
    });
}

#[test]
fn a_stage_that_waits_forever_returns_when_the_pipeline_is_cancelled() {
    within(Duration::from_secs(20), || {
        let p = Pipeline::<u64>::builder()
            .stage("forever", |ctx: &framepipe::StageContext| {
                let cancel = ctx.cancel.clone();
                Ok::<_, Injected>(framepipe::stage_fn(move |x: u64| {
                    cancel.wait(); // a device or socket that never answers
                    Err::<u64, _>(Injected(x))
                }))
            })
            .build()
            .unwrap();
        p.input().push(1).unwrap();
        let t = Instant::now();
        let r = p.close_timeout(Duration::from_millis(200)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!((r.frames_out, r.errored, r.lost), (1, 1, 0));
    });
}

#[test]
fn a_stage_that_ignores_cancellation_is_named_and_left_behind() {
    let released = Arc::new(std::sync::Barrier::new(2));
    let r2 = released.clone();
    within(Duration::from_secs(20), move || {
        let p = Pipeline::<u64>::builder()
            .stage("stuck", move |_| {
                let r = r2.clone();
                Ok::<_, Injected>(framepipe::stage_fn(move |x: u64| {
                    r.wait();
                    Ok::<u64, Injected>(x)
                }))
            })
            .build()
            .unwrap();
        p.input().push(1).unwrap();
        match p.close_timeout(Duration::from_millis(100)) {
            Err(PipelineError::Hung { threads, report }) => {
                assert_eq!(threads, vec!["stuck".to_string()]);
                assert_eq!(report.lost, 1);
            }
            other => panic!("{other:?}"),
        }
    });
    released.wait(); // let the detached thread finish
}

#[test]
fn dropping_a_running_pipeline_joins_its_threads() {
    let live = Arc::new(AtomicUsize::new(0));
    let l2 = live.clone();
    within(Duration::from_secs(20), move || {
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let p = Pipeline::<u64>::builder()
            .stage(StageConfig::new("s").replicas(3), move |_| {
                l2.fetch_add(1, Ordering::SeqCst);
                let g = Guard(l2.clone());
                Ok::<_, Injected>(framepipe::stage_fn(move |x: u64| {
                    let _ = &g;
                    busy_for(200);
                    Ok::<u64, Injected>(x)
                }))
            })
            .build()
            .unwrap();
        let input = p.input();
        for i in 0..5 {
            input.push(i).unwrap();
        }
        drop(p);
        // After drop returned, every replica's state was dropped: its thread ended.
    });
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[test]
fn push_after_close_hands_the_frame_back() {
    within(Duration::from_secs(10), || {
        let p = three_stages(None, [1, 1, 1]);
        let input = p.input();
        p.finish();
        assert_eq!(input.push(42).unwrap_err().0, 42);
        let r = p.close().unwrap();
        assert_eq!((r.frames_in, r.frames_out), (0, 0));
    });
}

#[test]
fn a_failing_factory_fails_the_build_and_leaves_no_thread() {
    within(Duration::from_secs(10), || {
        let err = Pipeline::<u64>::builder()
            .stage_fn("ok", |x: u64| Ok::<u64, Injected>(x))
            .stage(StageConfig::new("bad").replicas(2), |ctx: &framepipe::StageContext| {
                if ctx.replica == 1 {
                    Err(Injected(99))
                } else {
                    Ok(framepipe::stage_fn(|x: u64| Ok::<u64, Injected>(x)))
                }
            })
            .build()
            .unwrap_err();
        match err {
            BuildError::StageInit { stage, replica, error } => {
                assert_eq!((stage.as_str(), replica), ("bad", 1));
                assert!(error.to_string().contains("99"));
            }
            other => panic!("{other}"),
        }
    });
}

#[test]
fn a_stage_error_comes_out_in_its_slot_and_the_pipeline_goes_on() {
    within(Duration::from_secs(10), || {
        let mut p = Pipeline::<u64>::builder()
            .stage_fn("even-only", |x: u64| if x.is_multiple_of(2) { Ok(x) } else { Err(Injected(x)) })
            .build()
            .unwrap();
        let input = p.input();
        std::thread::spawn(move || {
            for i in 0..6 {
                input.push(i).unwrap();
            }
            input.close();
        });
        let outs: Vec<_> = p.iter().map(|e| (e.seq(), e.into_result().map_err(|t| t.to_string()))).collect();
        assert_eq!(outs.len(), 6);
        for (seq, r) in outs {
            if seq.is_multiple_of(2) {
                assert_eq!(r.unwrap(), seq);
            } else {
                let msg = r.unwrap_err();
                assert!(msg.contains("even-only") && msg.contains(&format!("injected failure on {seq}")), "{msg}");
            }
        }
    });
}
