//! Several models per frame (fan-out and join) and several cameras per runtime (streams).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{busy_for, within, Injected};
use framepipe::{Admission, Branch, Joined, Pipeline, StageConfig, Tombstone};
use proptest::prelude::*;

/// (stream, per-stream index) → which branches saw it.
type Frame = (u32, u64);

fn delay(seed: u64, salt: u64, max_us: u64) -> u64 {
    if max_us == 0 {
        return 0;
    }
    (seed ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) % (max_us + 1)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    /// Three streams, two branches (one replicated), random delays: every frame comes out once,
    /// joined with both branches' results, and each stream's frames in that stream's order.
    #[test]
    fn per_stream_order_holds_through_branches_under_random_delays(
        frames in 1u64..40,
        max_a in 0u64..300,
        max_b in 0u64..300,
        replicas in 1usize..=3,
        seed in any::<u64>(),
    ) {
        let (outs, report) = within(Duration::from_secs(60), move || {
            let a = Branch::<Frame>::new("a").stage_fn(StageConfig::new("a1").replicas(replicas), move |f: Frame| {
                busy_for(delay(seed, f.0 as u64 * 1000 + f.1, max_a));
                Ok::<_, Injected>((f, 'a'))
            });
            let b = Branch::<Frame>::new("b")
                .stage_fn("b1", move |f: Frame| {
                    busy_for(delay(seed.rotate_left(7), f.0 as u64 * 1000 + f.1, max_b));
                    Ok::<_, Injected>((f, 'b'))
                })
                .stage_fn("b2", |x: (Frame, char)| Ok::<_, Injected>(x));
            let mut p = Pipeline::<Frame>::builder()
                .streams(3)
                .stage_fn(StageConfig::new("pre").replicas(2), |f: Frame| Ok::<_, Injected>(f))
                .fan_out(vec![a, b])
                .stage_fn("after", |j: Joined<(Frame, char)>| Ok::<_, Injected>(j))
                .build()
                .unwrap();
            let feeders: Vec<_> = (0..3u32)
                .map(|s| {
                    let input = p.input_for(s).unwrap();
                    std::thread::spawn(move || {
                        for i in 0..frames {
                            input.push((s, i)).unwrap();
                        }
                        input.close();
                    })
                })
                .collect();
            let mut outs = Vec::new();
            while let Some(e) = p.recv() {
                let j = e.into_result().expect("no tombstone expected");
                let got: Vec<(Frame, char)> = j.iter().map(|r| *r.unwrap()).collect();
                outs.push(got);
            }
            feeders.into_iter().for_each(|f| f.join().unwrap());
            (outs, p.close().unwrap())
        });
        prop_assert_eq!(outs.len() as u64, 3 * frames);
        let mut next: HashMap<u32, u64> = HashMap::new();
        for got in &outs {
            prop_assert_eq!(got.len(), 2);
            prop_assert_eq!(got[0].1, 'a');
            prop_assert_eq!(got[1].1, 'b');
            prop_assert_eq!(got[0].0, got[1].0, "both branches saw the same frame");
            let (s, i) = got[0].0;
            let n = next.entry(s).or_insert(0);
            prop_assert_eq!(i, *n, "stream {} out of order", s);
            *n += 1;
        }
        prop_assert_eq!((report.lost, report.reordered), (0, 0));
        prop_assert_eq!(report.streams.len(), 3);
        for s in &report.streams {
            prop_assert_eq!((s.frames_in, s.admitted, s.frames_out, s.dropped, s.reordered), (frames, frames, frames, 0, 0));
        }
        prop_assert_eq!(report.branches.len(), 2);
        prop_assert_eq!(report.branches[0].latency_us.count, 3 * frames);
    }
}

#[test]
fn a_branch_error_surfaces_without_losing_the_other_branch() {
    within(Duration::from_secs(20), || {
        let good = Branch::<u64>::new("person").stage_fn("detect-person", |x: u64| Ok::<_, Injected>(x * 10));
        let flaky =
            Branch::<u64>::new("face").stage_fn(
                "detect-face",
                |x: u64| {
                    if x % 3 == 1 {
                        Err(Injected(x))
                    } else {
                        Ok(x * 100)
                    }
                },
            );
        let mut p = Pipeline::<u64>::builder().fan_out(vec![good, flaky]).build().unwrap();
        let input = p.input();
        std::thread::spawn(move || {
            (0..9).for_each(|i| input.push(i).unwrap());
            input.close();
        });
        let mut n = 0;
        while let Some(e) = p.recv() {
            let seq = e.seq();
            let j = e.into_result().unwrap();
            assert_eq!(j.get(0).unwrap().ok(), Some(&(seq * 10)), "the other branch's result is there");
            match j.get(1).unwrap() {
                Ok(v) => assert_eq!(*v, seq * 100),
                Err(Tombstone::Error { stage, .. }) => {
                    assert_eq!(seq % 3, 1);
                    assert_eq!(&stage[..], "detect-face");
                }
                Err(t) => panic!("{t}"),
            }
            n += 1;
        }
        let r = p.close().unwrap();
        assert_eq!(n, 9);
        assert_eq!((r.processed, r.errored, r.lost), (9, 0, 0), "the joined frames are processed");
        assert_eq!((r.branches[0].errored, r.branches[1].errored), (0, 3));
        assert_eq!(r.branches[1].name, "face");
    });
}

#[test]
fn a_frame_that_failed_before_the_fan_out_comes_out_whole() {
    within(Duration::from_secs(20), || {
        let a = Branch::<u64>::new("a").stage_fn("a1", |x: u64| Ok::<_, Injected>(x));
        let b = Branch::<u64>::new("b").stage_fn("b1", |x: u64| Ok::<_, Injected>(x));
        let mut p = Pipeline::<u64>::builder()
            .stage_fn("gate", |x: u64| if x == 2 { Err(Injected(x)) } else { Ok(x) })
            .fan_out(vec![a, b])
            .build()
            .unwrap();
        let input = p.input();
        std::thread::spawn(move || {
            (0..5).for_each(|i| input.push(i).unwrap());
            input.close();
        });
        let outs: Vec<_> =
            p.iter().map(|e| (e.seq(), e.into_result().map(|j| j.len()).map_err(|t| t.stage().to_string()))).collect();
        assert_eq!(outs, vec![(0, Ok(2)), (1, Ok(2)), (2, Err("gate".into())), (3, Ok(2)), (4, Ok(2))]);
        let r = p.close().unwrap();
        assert_eq!((r.errored, r.branches[0].errored, r.branches[1].errored), (1, 0, 0));
    });
}

#[test]
fn a_fast_camera_cannot_starve_a_slow_one() {
    within(Duration::from_secs(30), || {
        // A slow pipeline (2 ms a frame), two cameras under keep-latest: a fast one pushing as fast
        // as it can, and a slow one at ~200 fps.
        let mut p = Pipeline::<u32>::builder()
            .streams(2)
            .admission(Admission::KeepLatest)
            .stage_fn("slow", |s: u32| {
                busy_for(2000);
                Ok::<_, Injected>(s)
            })
            .build()
            .unwrap();
        let fast = p.input_for(0).unwrap();
        let slow = p.input_for(1).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s1 = stop.clone();
        let f = std::thread::spawn(move || {
            while !s1.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = fast.push(0);
                std::thread::yield_now();
            }
        });
        let s2 = stop.clone();
        let g = std::thread::spawn(move || {
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = slow.push(1);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let mut count = [0u32; 2];
        for _ in 0..120 {
            let e = p.recv().unwrap();
            count[*e.payload().unwrap() as usize] += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        f.join().unwrap();
        g.join().unwrap();
        let r = p.close().unwrap();
        // Round-robin: the slow camera gets a frame through whenever it has one waiting, about every
        // other slot while it pushes every 5 ms and the stage takes 2 ms.
        assert!(count[1] >= 20, "the slow stream was starved: {count:?}");
        for s in &r.streams {
            assert_eq!(s.frames_in, s.admitted + s.dropped, "stream {}: every drop is counted", s.id);
        }
        assert!(r.streams[0].dropped > r.streams[1].dropped, "{:?}", r.streams);
    });
}

#[test]
fn a_source_per_stream_each_ends_its_own_stream() {
    within(Duration::from_secs(20), || {
        let mut p = Pipeline::<(u32, u32)>::builder()
            .source(framepipe::SourceConfig::new("cam0").stream(0), framepipe::IterSource((0..30).map(|i| (0, i))))
            .source(framepipe::SourceConfig::new("cam1").stream(1), framepipe::IterSource((0..7).map(|i| (1, i))))
            .stage_fn("id", |x: (u32, u32)| Ok::<_, Injected>(x))
            .build()
            .unwrap();
        let mut last: HashMap<u32, u32> = HashMap::new();
        let mut n = 0;
        while let Some(e) = p.recv() {
            let (s, i) = *e.payload().unwrap();
            assert_eq!(e.stream(), s);
            if let Some(prev) = last.insert(s, i) {
                assert_eq!(i, prev + 1);
            }
            n += 1;
        }
        let r = p.close().unwrap();
        assert_eq!(n, 37);
        assert_eq!(r.streams.iter().map(|s| s.frames_out).collect::<Vec<_>>(), vec![30, 7]);
        assert_eq!(r.release, "just-in-time");
        assert!(r.notices.iter().all(|m| !m.contains("just-in-time")), "{:?}", r.notices);
    });
}

/// A source that logs which stream read a frame, and when.
struct Logged {
    stream: u32,
    left: u32,
    log: Arc<Mutex<Vec<u32>>>,
}

impl framepipe::Source for Logged {
    type Item = u32;
    type Error = std::convert::Infallible;
    fn next(&mut self) -> Option<Result<u32, Self::Error>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.log.lock().unwrap().push(self.stream);
        Some(Ok(self.stream))
    }
}

/// Three file-like sources (12, 4 and 12 frames) into one stage of `STAGE_US`: returns the order in
/// which the streams read their frames, how long each frame waited between its read and the stage
/// (µs, sorted), and the report.
fn three_sources(pace: framepipe::Pace) -> (Vec<u32>, Vec<u64>, framepipe::Report) {
    const STAGE_US: u64 = 3000;
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut b = Pipeline::<u32>::builder();
    for (stream, frames) in [(0u32, 12u32), (1, 4), (2, 12)] {
        b = b.source(
            framepipe::SourceConfig::new(format!("file{stream}")).stream(stream).pace(pace),
            Logged { stream, left: frames, log: log.clone() },
        );
    }
    let mut p = b
        .stage_fn("slow", |s: u32| {
            busy_for(STAGE_US);
            Ok::<_, Injected>(s)
        })
        .build()
        .unwrap();
    let mut waits = Vec::new();
    while let Some(e) = p.recv() {
        waits.push(e.stamps()[0].enter_ns / 1000);
    }
    let r = p.close().unwrap();
    waits.sort_unstable();
    let log = log.lock().unwrap().clone();
    (log, waits, r)
}

#[test]
fn just_in_time_sources_take_turns_and_their_frames_do_not_wait() {
    within(Duration::from_secs(60), || {
        let (log, waits, r) = three_sources(framepipe::Pace::JustInTime);
        assert_eq!(r.release, "just-in-time");
        assert_eq!(r.streams.iter().map(|s| s.frames_out).collect::<Vec<_>>(), vec![12, 4, 12]);
        assert_eq!(r.streams.iter().map(|s| s.dropped).sum::<u64>(), 0);
        // Round-robin: at every point of the read order, the streams that still had frames have read
        // within one frame of each other (stream 1 ends after 4).
        let mut n = [0u32; 3];
        for (i, s) in log.iter().enumerate() {
            n[*s as usize] += 1;
            let active: Vec<u32> = n.iter().enumerate().filter(|(k, _)| *k != 1 || n[1] < 4).map(|(_, c)| *c).collect();
            let (lo, hi) = (active.iter().min().unwrap(), active.iter().max().unwrap());
            assert!(hi - lo <= 1, "read {i}: streams unbalanced {n:?} in {log:?}");
        }
        // A frame is read when the stage can take it: the median wait between read and stage is a
        // hop, far below the 3 ms the stage takes (three free sources would queue frames behind it).
        let median = waits[waits.len() / 2];
        assert!(median < 1500, "median wait {median} µs before the stage: {waits:?}");

        // The same three sources run free: the frames wait behind the stage, as the median shows.
        let (_, waits, r) = three_sources(framepipe::Pace::Free);
        assert_eq!(r.release, "free");
        let median = waits[waits.len() / 2];
        assert!(median >= 3000, "free sources: median wait {median} µs: {waits:?}");
    });
}

#[test]
fn bad_topologies_are_refused() {
    let e = Pipeline::<u32>::builder().fan_out::<u32>(vec![Branch::new("empty")]).build().unwrap_err();
    assert!(e.to_string().contains("branch `empty` has no stage"), "{e}");
    let e = Pipeline::<u32>::builder()
        .source(framepipe::SourceConfig::new("a"), framepipe::IterSource(0..1u32))
        .source(framepipe::SourceConfig::new("b"), framepipe::IterSource(0..1u32))
        .stage_fn("s", |x: u32| Ok::<_, Injected>(x))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("two sources feed stream 0"), "{e}");
}
