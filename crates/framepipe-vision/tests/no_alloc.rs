//! Proves the hot path allocates nothing in steady state, with a counting
//! global allocator (this test binary only). Counting is per thread, so other
//! tests running in parallel do not interfere.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use framepipe_vision::{
    draw, BBox, Decoder, Detection, Frame, Labels, LetterboxParams, Nms, NmsConfig, PixelFormat, PostprocessConfig,
    Postprocessor, PreprocessConfig, Preprocessor, TensorView,
};

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc() {
    // `try_with`: the thread-local may already be gone during thread teardown.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            COUNT.with(|c| c.set(c.get() + 1));
        }
    });
}

struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; the bookkeeping only
// touches const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as our caller's (non-zero size layout).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: `ptr` came from this allocator (i.e. from `System`) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (i.e. from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Number of allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    COUNT.with(|c| c.get())
}

#[test]
fn counter_detects_allocations() {
    // The instrument itself works.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
    assert_eq!(allocations(|| {}), 0);
}

#[test]
fn preprocess_steady_state_allocates_nothing() {
    let mut pre = Preprocessor::new(PreprocessConfig::new(640, 640)).unwrap();
    let mut out = vec![0.0f32; pre.output_len()];
    for (w, h, fmt) in [
        (1920, 1080, PixelFormat::Bgr8), // integer ratio path
        (1600, 900, PixelFormat::Bgr8),  // interpolating path
        (640, 480, PixelFormat::Gray8),
        (300, 200, PixelFormat::Rgb8), // upscale
    ] {
        let frame = Frame::new(w, h, fmt).unwrap();
        pre.preprocess(frame.as_ref(), &mut out).unwrap(); // warm-up builds tables
        let n = allocations(|| {
            for _ in 0..3 {
                pre.preprocess(frame.as_ref(), &mut out).unwrap();
            }
        });
        assert_eq!(n, 0, "{w}x{h} {fmt}");
    }
}

/// Deterministic YOLOv8-like output: `nc` classes, 8400 anchors, a few hundred
/// anchors above 0.25 in clusters so NMS has real work.
fn yolov8_output(nc: usize) -> Vec<f32> {
    let n = 8400;
    let mut d = vec![0.0f32; (4 + nc) * n];
    let mut s: u32 = 7;
    let mut rnd = || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) as f32 / (1u32 << 24) as f32
    };
    for i in 0..n {
        let cluster = (i % 40) as f32;
        d[i] = 16.0 * cluster + 8.0 * rnd();
        d[n + i] = 16.0 * ((i / 40) % 40) as f32 + 8.0 * rnd();
        d[2 * n + i] = 20.0 + 10.0 * rnd();
        d[3 * n + i] = 20.0 + 10.0 * rnd();
        for c in 0..nc {
            let v = rnd();
            d[(4 + c) * n + i] = if i % 23 == 0 { 0.3 + 0.7 * v } else { 0.2 * v };
        }
    }
    d
}

#[test]
fn postprocess_and_nms_steady_state_allocate_nothing() {
    let lb = LetterboxParams::compute(1920, 1080, &PreprocessConfig::new(640, 640)).unwrap();
    let mut dets = Vec::new();
    for nc in [80, 2] {
        let data = yolov8_output(nc);
        let shape = [1, 4 + nc, 8400];
        let view = TensorView::new(&shape, &data).unwrap();
        let dec = Decoder::from_output_shape(&shape, None).unwrap();
        let mut post = Postprocessor::new(dec, PostprocessConfig::default()).unwrap();
        post.process(&[view], &lb, &mut dets).unwrap();
        assert!(!dets.is_empty());
        let n = allocations(|| {
            for _ in 0..3 {
                post.process(&[view], &lb, &mut dets).unwrap();
            }
        });
        assert_eq!(n, 0, "nc = {nc}");
    }

    // NMS on its own, in place.
    let base: Vec<Detection> = (0..500)
        .map(|i| Detection {
            class_id: i % 3,
            score: (i % 97) as f32 / 97.0,
            bbox: BBox::new((i % 50) as f32 * 5.0, 0.0, (i % 50) as f32 * 5.0 + 20.0, 20.0),
            landmarks: None,
        })
        .collect();
    let mut nms = Nms::new(NmsConfig::default()).unwrap();
    let mut work = base.clone();
    nms.apply(&mut work);
    let n = allocations(|| {
        for _ in 0..3 {
            work.clear();
            work.extend_from_slice(&base);
            nms.apply(&mut work);
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn drawing_allocates_nothing() {
    let mut frame = Frame::new(320, 240, PixelFormat::Bgr8).unwrap();
    let labels = Labels::parse_names_dict("{0: 'Normal', 1: 'Fall'}").unwrap();
    let dets = [
        Detection {
            class_id: 1,
            score: 0.87,
            bbox: BBox::new(10.0, 40.0, 200.0, 200.0),
            landmarks: Some([[20.0, 50.0]; 5]),
        },
        Detection {
            class_id: 7, // no name: printed as a number
            score: 0.5,
            bbox: BBox::new(-50.0, -50.0, 400.0, 400.0),
            landmarks: None,
        },
    ];
    let style = draw::DrawStyle::default();
    let n = allocations(|| {
        draw::draw_detections(&mut frame.as_mut(), &dets, Some(&labels), &style);
    });
    assert_eq!(n, 0);
}
