//! The cost of one hop between threads, and of the runtime around it.
//!
//! * `round_trip/*`: a value goes to another thread and comes back (two hops); criterion's time is per
//!   round trip. Blocking crossbeam parks the receiver (a futex wake per hop), the ringbuf SPSC ring
//!   spins, std's `sync_channel` parks like crossbeam.
//! * `spin_collapse/*`: two spinning threads pinned to one core, the configuration the runtime
//!   refuses: each hop waits for the other thread's time slice to run out.
//! * `pipeline/*`: three identity stages; `latency` pushes one frame and waits for it (four hops),
//!   `throughput` streams frames (time per frame).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use framepipe::{Pipeline, StageConfig};
use ringbuf::traits::{Consumer, Producer, Split};

fn crossbeam_blocking(c: &mut Criterion) {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(1);
    let (btx, brx) = crossbeam_channel::bounded::<u64>(1);
    let echo = std::thread::spawn(move || {
        while let Ok(v) = rx.recv() {
            if btx.send(v).is_err() {
                break;
            }
        }
    });
    c.bench_function("round_trip/crossbeam_blocking", |b| {
        b.iter(|| {
            tx.send(1).unwrap();
            brx.recv().unwrap()
        })
    });
    drop(tx);
    echo.join().unwrap();
}

fn std_mpsc(c: &mut Criterion) {
    let (tx, rx) = mpsc::sync_channel::<u64>(1);
    let (btx, brx) = mpsc::sync_channel::<u64>(1);
    let echo = std::thread::spawn(move || {
        while let Ok(v) = rx.recv() {
            if btx.send(v).is_err() {
                break;
            }
        }
    });
    c.bench_function("round_trip/std_mpsc_sync_channel", |b| {
        b.iter(|| {
            tx.send(1).unwrap();
            brx.recv().unwrap()
        })
    });
    drop(tx);
    echo.join().unwrap();
}

struct SpinPair {
    ptx: ringbuf::HeapProd<u64>,
    brx: ringbuf::HeapCons<u64>,
    echo: Option<std::thread::JoinHandle<()>>,
}

impl SpinPair {
    /// An echo thread that spins on a ring; both threads pinned to `pin` if given.
    fn new(pin: Option<usize>) -> Self {
        let (ptx, mut prx) = ringbuf::HeapRb::<u64>::new(1).split();
        let (mut btx, brx) = ringbuf::HeapRb::<u64>::new(1).split();
        let echo = std::thread::spawn(move || {
            if let Some(core) = pin {
                core_affinity::set_for_current(core_affinity::CoreId { id: core });
            }
            loop {
                match prx.try_pop() {
                    Some(u64::MAX) => break,
                    Some(v) => {
                        while btx.try_push(v).is_err() {
                            std::hint::spin_loop();
                        }
                    }
                    None => std::hint::spin_loop(),
                }
            }
        });
        if let Some(core) = pin {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        SpinPair { ptx, brx, echo: Some(echo) }
    }

    fn send(&mut self, v: u64) {
        while self.ptx.try_push(v).is_err() {
            std::hint::spin_loop();
        }
    }

    fn ping(&mut self) -> u64 {
        self.send(1);
        loop {
            if let Some(v) = self.brx.try_pop() {
                return v;
            }
            std::hint::spin_loop();
        }
    }
}

impl Drop for SpinPair {
    fn drop(&mut self) {
        self.send(u64::MAX);
        if let Some(h) = self.echo.take() {
            let _ = h.join();
        }
        unpin();
    }
}

/// Lets the calling thread run on every core again.
fn unpin() {
    let all: Vec<_> = core_affinity::get_core_ids().unwrap_or_default();
    // SAFETY: plain libc calls on a zeroed cpu_set_t; every index comes from the OS's own list.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in &all {
            libc::CPU_SET(c.id, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn ringbuf_spin(c: &mut Criterion) {
    let mut pair = SpinPair::new(None);
    c.bench_function("round_trip/ringbuf_spin", |b| b.iter(|| pair.ping()));
}

fn spin_collapse(c: &mut Criterion) {
    let mut pair = SpinPair::new(Some(0));
    let mut g = c.benchmark_group("spin_collapse");
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(2));
    g.bench_function("ringbuf_spin_both_on_core_0", |b| b.iter(|| pair.ping()));
    g.finish();
}

fn identity_pipeline() -> Pipeline<u64, u64> {
    Pipeline::<u64>::builder()
        .stage_fn(StageConfig::new("a"), |x: u64| Ok::<_, std::convert::Infallible>(x))
        .stage_fn(StageConfig::new("b"), |x: u64| Ok::<_, std::convert::Infallible>(x))
        .stage_fn(StageConfig::new("c"), |x: u64| Ok::<_, std::convert::Infallible>(x))
        .build()
        .unwrap()
}

fn pipeline(c: &mut Criterion) {
    let mut p = identity_pipeline();
    let input = p.input();
    c.bench_function("pipeline/empty_3_stages/latency_per_frame", |b| {
        b.iter(|| {
            input.push(1).unwrap();
            p.recv().unwrap().seq()
        })
    });
    drop(input);
    p.close().unwrap();

    c.bench_function("pipeline/empty_3_stages/throughput_time_per_frame", |b| {
        b.iter_custom(|iters| {
            let mut p = identity_pipeline();
            let input = p.input();
            let feeder = std::thread::spawn(move || {
                for i in 0..iters {
                    input.push(i).unwrap();
                }
            });
            let t = Instant::now();
            for _ in 0..iters {
                p.recv().unwrap();
            }
            let d = t.elapsed();
            feeder.join().unwrap();
            p.close().unwrap();
            d
        })
    });
}

criterion_group!(benches, crossbeam_blocking, std_mpsc, ringbuf_spin, pipeline, spin_collapse);
criterion_main!(benches);
