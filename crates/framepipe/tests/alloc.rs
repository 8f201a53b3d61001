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
    for wait in [WaitStrategy::Block, WaitStrategy::hybrid()] {
        let allocs = run(wait);
        assert_eq!(allocs, 0, "{allocs} heap allocations in steady state with {wait}");
    }
}
