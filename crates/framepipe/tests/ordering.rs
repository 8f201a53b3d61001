//! Property tests: whatever the stages, replicas, capacities, service times and error rates, output
//! is the input sequence, in order, with every error in its slot.

mod common;

use std::time::Duration;

use common::{busy_for, within, Injected};
use framepipe::{Admission, Pipeline, StageConfig, Tombstone};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct StageSpec {
    replicas: usize,
    capacity: usize,
    max_us: u64,
    /// A frame fails in this stage when `(seq * 7 + stage) % fail_every == 0`.
    fail_every: u64,
}

fn stage_spec() -> impl Strategy<Value = StageSpec> {
    (1usize..=3, 1usize..=3, 0u64..=200, prop_oneof![Just(0u64), 3u64..=11])
        .prop_map(|(replicas, capacity, max_us, fail_every)| StageSpec { replicas, capacity, max_us, fail_every })
}

fn fails(spec: &StageSpec, k: usize, seq: u64) -> bool {
    spec.fail_every != 0 && (seq * 7 + k as u64).is_multiple_of(spec.fail_every)
}

/// Payload: (frame id, the stages it went through in order).
type Item = (u64, Vec<usize>);

fn build(specs: &[StageSpec], admission: Admission, max_in_flight: Option<usize>, seed: u64) -> Pipeline<u64, Item> {
    let mut b =
        Pipeline::<u64>::builder().admission(admission).stage_fn("start", |x: u64| Ok::<Item, Injected>((x, vec![])));
    if let Some(m) = max_in_flight {
        b = b.max_in_flight(m);
    }
    for (k, spec) in specs.iter().enumerate() {
        let spec2 = spec.clone();
        b = b.stage_fn(
            StageConfig::new(format!("s{k}")).replicas(spec.replicas).capacity(spec.capacity),
            move |(id, mut path): Item| {
                // Deterministic pseudo-random service time per (frame, stage).
                let h = (id ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(k as u32 * 7);
                busy_for(if spec2.max_us == 0 { 0 } else { h % (spec2.max_us + 1) });
                if fails(&spec2, k, id) {
                    return Err(Injected(id));
                }
                path.push(k);
                Ok((id, path))
            },
        );
    }
    b.build().expect("valid pipeline")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn block_delivers_every_frame_in_order_with_errors_in_their_slots(
        specs in proptest::collection::vec(stage_spec(), 1..=4),
        frames in 1u64..120,
        tight in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let specs2 = specs.clone();
        let (outs, report) = within(Duration::from_secs(60), move || {
            let mut p = build(&specs2, Admission::Block, if tight { Some(2) } else { None }, seed);
            let input = p.input();
            let feeder = std::thread::spawn(move || for i in 0..frames { input.push(i).unwrap(); });
            let mut outs = Vec::new();
            while outs.len() < frames as usize {
                let e = p.recv().expect("pipeline ended early");
                let r = match e.result() {
                    Ok((id, path)) => Ok((*id, path.clone())),
                    Err(Tombstone::Error { stage, .. }) => Err(stage.to_string()),
                    Err(t) => panic!("unexpected tombstone {t}"),
                };
                outs.push((e.seq(), r));
            }
            feeder.join().unwrap();
            (outs, p.close().unwrap())
        });
        prop_assert_eq!(outs.len() as u64, frames);
        for (i, (seq, r)) in outs.iter().enumerate() {
            prop_assert_eq!(*seq, i as u64, "out of order");
            let first_fail = specs.iter().enumerate().find(|(k, s)| fails(s, *k, i as u64)).map(|(k, _)| k);
            match (first_fail, r) {
                (None, Ok((id, path))) => {
                    prop_assert_eq!(*id, i as u64);
                    prop_assert_eq!(path, &(0..specs.len()).collect::<Vec<_>>());
                }
                (Some(k), Err(stage)) => prop_assert_eq!(stage, &format!("s{k}")),
                (f, r) => prop_assert!(false, "frame {i}: expected failure at {f:?}, got {r:?}"),
            }
        }
        prop_assert_eq!((report.frames_in, report.admitted, report.frames_out), (frames, frames, frames));
        prop_assert_eq!((report.lost, report.reordered, report.dropped), (0, 0, 0));
        let errors = outs.iter().filter(|(_, r)| r.is_err()).count() as u64;
        prop_assert_eq!(report.errored, errors);
        prop_assert_eq!(report.processed, frames - errors);
    }

    #[test]
    fn dropping_policies_count_every_drop_and_keep_order(
        specs in proptest::collection::vec(stage_spec(), 1..=3),
        frames in 1u64..200,
        keep_latest in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let policy = if keep_latest { Admission::KeepLatest } else { Admission::DropOldest };
        let (seqs, ids, report) = within(Duration::from_secs(60), move || {
            let mut p = build(&specs, policy, None, seed);
            let input = p.input();
            // Push faster than the pipeline runs, then close: frames are dropped at the entrance.
            for i in 0..frames {
                input.push(i).unwrap();
            }
            p.finish();
            let mut seqs = Vec::new();
            let mut ids = Vec::new();
            while let Some(e) = p.recv() {
                seqs.push(e.seq());
                if let Ok((id, _)) = e.result() {
                    ids.push(*id);
                }
            }
            (seqs, ids, p.close().unwrap())
        });
        // Numbers have no holes even though frames were dropped.
        prop_assert_eq!(&seqs, &(0..seqs.len() as u64).collect::<Vec<_>>());
        // Surviving frames keep their capture order.
        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
        prop_assert_eq!(report.frames_in, frames);
        prop_assert_eq!(report.frames_in, report.frames_out + report.dropped);
        prop_assert_eq!(report.frames_out, seqs.len() as u64);
        prop_assert_eq!((report.lost, report.reordered), (0, 0));
        // The newest frame is never the one dropped.
        if let Some(last) = ids.last() { prop_assert!(*last == frames - 1 || report.errored > 0); }
    }
}

#[test]
fn keep_latest_keeps_only_the_newest_waiting_frame() {
    within(Duration::from_secs(20), || {
        let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
        let g2 = gate.clone();
        let mut p = Pipeline::<u64>::builder()
            .admission(Admission::KeepLatest)
            .stage(StageConfig::new("hold").capacity(3), move |_| {
                let g = g2.clone();
                let mut first = true;
                Ok::<_, Injected>(framepipe::stage_fn(move |x: u64| {
                    if first {
                        first = false;
                        g.wait(); // hold frame 0 until everything else was pushed
                    }
                    Ok::<u64, Injected>(x)
                }))
            })
            .build()
            .unwrap();
        let input = p.input();
        input.push(0).unwrap();
        // Wait until the stage has taken frame 0.
        while p.report().admitted < 1 {
            std::thread::yield_now();
        }
        for i in 1..=10 {
            input.push(i).unwrap();
        }
        gate.wait();
        p.finish();
        let got: Vec<u64> = p.iter().map(|e| e.into_result().unwrap()).collect();
        let r = p.close().unwrap();
        assert_eq!(got, vec![0, 10], "keep-latest keeps only the newest waiting frame");
        assert_eq!((r.frames_in, r.dropped, r.frames_out), (11, 9, 2));
    });
}

#[test]
fn drop_oldest_keeps_the_newest_capacity_frames() {
    within(Duration::from_secs(20), || {
        let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
        let g2 = gate.clone();
        let mut p = Pipeline::<u64>::builder()
            .admission(Admission::DropOldest)
            .stage(StageConfig::new("hold").capacity(3), move |_| {
                let g = g2.clone();
                let mut first = true;
                Ok::<_, Injected>(framepipe::stage_fn(move |x: u64| {
                    if first {
                        first = false;
                        g.wait();
                    }
                    Ok::<u64, Injected>(x)
                }))
            })
            .build()
            .unwrap();
        let input = p.input();
        input.push(0).unwrap();
        while p.report().admitted < 1 {
            std::thread::yield_now();
        }
        for i in 1..=10 {
            input.push(i).unwrap();
        }
        gate.wait();
        p.finish();
        let got: Vec<u64> = p.iter().map(|e| e.into_result().unwrap()).collect();
        let r = p.close().unwrap();
        assert_eq!(got, vec![0, 8, 9, 10]);
        assert_eq!((r.frames_in, r.dropped, r.frames_out), (11, 7, 4));
    });
}

#[test]
fn a_stateful_stage_after_replicas_sees_frames_in_order() {
    within(Duration::from_secs(30), || {
        let mut p = Pipeline::<u64>::builder()
            .stage_fn(StageConfig::new("jittery").replicas(4), |x: u64| {
                busy_for((x * 7919) % 300);
                Ok::<u64, Injected>(x)
            })
            .stage(StageConfig::new("tracker"), |_| {
                let mut last: Option<u64> = None;
                Ok::<_, Injected>(framepipe::stage_fn(move |x: u64| {
                    // A tracker needs consecutive frames.
                    assert_eq!(last.map_or(0, |l| l + 1), x, "tracker saw frames out of order");
                    last = Some(x);
                    Ok::<u64, Injected>(x)
                }))
            })
            .stage_fn(StageConfig::new("fanout").replicas(3), |x: u64| {
                busy_for((x * 104729) % 200);
                Ok::<u64, Injected>(x)
            })
            .build()
            .unwrap();
        let input = p.input();
        let feeder = std::thread::spawn(move || (0..500u64).for_each(|i| input.push(i).unwrap()));
        let got: Vec<u64> = p.iter().take(500).map(|e| e.into_result().unwrap()).collect();
        feeder.join().unwrap();
        let r = p.close().unwrap();
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        assert_eq!((r.lost, r.reordered, r.errored), (0, 0, 0));
        assert!(r.links.iter().any(|l| l.to == "tracker" && l.reorder));
        assert!(r.links.iter().any(|l| l.to == "output" && l.reorder));
    });
}

#[test]
fn deadline_skips_old_frames_as_counted_tombstones() {
    within(Duration::from_secs(20), || {
        let mut p = Pipeline::<u64>::builder()
            .deadline(Duration::from_millis(5))
            .stage_fn("slow", |x: u64| {
                std::thread::sleep(Duration::from_millis(10));
                Ok::<u64, Injected>(x)
            })
            .stage_fn("after", |x: u64| Ok::<u64, Injected>(x))
            .build()
            .unwrap();
        let input = p.input();
        let feeder = std::thread::spawn(move || (0..6u64).for_each(|i| input.push(i).unwrap()));
        let outs: Vec<_> = p.iter().take(6).collect();
        feeder.join().unwrap();
        let r = p.close().unwrap();
        // Frame 0 enters `slow` fresh, leaves it 10 ms old and is skipped at `after`.
        assert!(matches!(outs[0].result(), Err(Tombstone::Skipped { stage, .. }) if &stage[..] == "after"));
        assert!(outs.iter().all(|e| e.result().is_err()));
        assert_eq!(outs.iter().map(|e| e.seq()).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
        assert_eq!((r.skipped, r.processed, r.frames_out, r.lost), (6, 0, 6, 0));
    });
}
