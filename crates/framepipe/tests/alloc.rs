//! Steady state allocates nothing: after warm-up, 10,000 frames through three stages (one of them
//! replicated, so the reorder step runs too) make zero heap allocations, on every thread.
//!
//! Warm-up means every link has been both empty (its receivers waited) and full (its senders
//! waited): crossbeam-channel allocates a link side's waiter list the first time a thread waits
//! there, once.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{within, Injected};
use framepipe::{Pipeline, StageConfig, WaitStrategy};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// The counters are global: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

// SAFETY: every method forwards to the system allocator unchanged; counting is a relaxed atomic add
// that does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged; `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn run(wait: WaitStrategy) -> u64 {
    within(Duration::from_secs(60), move || {
        // Payload: a 64-byte frame handle moved by value, as a pooled buffer would be.
        let mut p = Pipeline::<[u64; 8]>::builder()
            .stage_fn(StageConfig::new("pre").wait(wait), |mut x: [u64; 8]| {
                x[1] = x[0] * 2;
                Ok::<_, Injected>(x)
            })
            .stage_fn(StageConfig::new("infer").replicas(2).wait(wait), |mut x: [u64; 8]| {
                x[2] = x[1] + 1;
                Ok::<_, Injected>(x)
            })
            .stage_fn(StageConfig::new("post").wait(wait), |x: [u64; 8]| Ok::<_, Injected>(x[2]))
            .build()
            .unwrap();
        let input = p.input();
        let feeder = std::thread::spawn(move || {
            // The feeder is the caller's thread: warm its channel wait context up like the runtime's.
            framepipe::prime_thread();
            for i in 0..12_000u64 {
                if i < 500 {
                    // Warm-up, part 1: a slow source, so every receiver waits on an empty link.
                    std::thread::sleep(Duration::from_micros(100));
                }
                if i == 2_000 {
                    // Warm-up done: every thread has blocked and woken at least once.
                    COUNTING.store(true, Ordering::SeqCst);
                }
                input.push([i, 0, 0, 0, 0, 0, 0, 0]).unwrap();
            }
        });
        framepipe::prime_thread();
        let mut ok = true;
        for i in 0..12_000u64 {
            if (500..1_500).contains(&i) {
                // Warm-up, part 2: a slow reader, so every sender waits on a full link.
                std::thread::sleep(Duration::from_micros(100));
            }
            let e = p.recv().unwrap();
            ok &= e.seq() == i && *e.payload().unwrap() == i * 2 + 1;
        }
        COUNTING.store(false, Ordering::SeqCst);
        feeder.join().unwrap();
        assert!(ok, "wrong output");
        let r = p.close().unwrap();
        assert_eq!((r.frames_out, r.lost), (12_000, 0));
        ALLOCS.swap(0, Ordering::SeqCst)
    })
}

#[test]
fn steady_state_allocates_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for wait in [WaitStrategy::Block, WaitStrategy::hybrid()] {
        let allocs = run(wait);
        assert_eq!(allocs, 0, "{allocs} heap allocations in steady state with {wait}");
    }
}

static STALL: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

fn stall_while(i: usize) {
    while STALL[i].load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The same with two streams and a fan-out into two branches joined again: the fork clones, the
/// join's slots and `Joined` are inline, its select is built once. Warm-up also stalls each branch
/// in turn, so that the fork has waited on each branch's full link.
#[test]
fn steady_state_with_streams_and_branches_allocates_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let allocs = within(Duration::from_secs(60), || {
        let a = framepipe::Branch::<[u64; 8]>::new("a").stage_fn("a1", |x: [u64; 8]| {
            stall_while(0);
            Ok::<_, Injected>(x[0] + 1)
        });
        let b = framepipe::Branch::<[u64; 8]>::new("b").stage_fn(StageConfig::new("b1").replicas(2), |x: [u64; 8]| {
            stall_while(1);
            Ok::<_, Injected>(x[0] * 2)
        });
        let mut p = Pipeline::<[u64; 8]>::builder()
            .streams(2)
            .stage_fn("pre", |x: [u64; 8]| Ok::<_, Injected>(x))
            .fan_out(vec![a, b])
            .stage_fn("post", |j: framepipe::Joined<u64>| {
                let mut it = j.iter();
                Ok::<_, Injected>(*it.next().unwrap().unwrap() + *it.next().unwrap().unwrap())
            })
            .build()
            .unwrap();
        let inputs = [p.input_for(0).unwrap(), p.input_for(1).unwrap()];
        let feeder = std::thread::spawn(move || {
            framepipe::prime_thread();
            for i in 0..12_000u64 {
                if i < 500 {
                    std::thread::sleep(Duration::from_micros(100));
                }
                if i == 2_000 {
                    COUNTING.store(true, Ordering::SeqCst);
                }
                inputs[(i % 2) as usize].push([i, 0, 0, 0, 0, 0, 0, 0]).unwrap();
            }
        });
        framepipe::prime_thread();
        let mut ok = true;
        for i in 0..12_000u64 {
            if (500..1_500).contains(&i) {
                std::thread::sleep(Duration::from_micros(100));
            }
            if i == 1_600 || i == 1_700 {
                // Warm-up, part 3: one branch stalls while the source goes on.
                let b = (i == 1_700) as usize;
                STALL[b].store(true, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(30));
                STALL[b].store(false, Ordering::Relaxed);
            }
            let e = p.recv().unwrap();
            ok &= e.seq() == i && *e.payload().unwrap() == 3 * i + 1;
        }
        COUNTING.store(false, Ordering::SeqCst);
        feeder.join().unwrap();
        assert!(ok, "wrong output");
        let r = p.close().unwrap();
        assert_eq!((r.frames_out, r.lost), (12_000, 0));
        ALLOCS.swap(0, Ordering::SeqCst)
    });
    assert_eq!(allocs, 0, "{allocs} heap allocations in steady state with streams and branches");
}
