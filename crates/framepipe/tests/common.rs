//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on its own thread and fails the test if it does not finish within `limit`: a hang is a
/// failure, not a stuck CI job.
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(v) => {
            h.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: re-raise its panic here.
            match h.join() {
                Err(p) => std::panic::resume_unwind(p),
                Ok(()) => unreachable!(),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("test body did not finish within {limit:?}: a hang")
        }
    }
}

/// A stage error for tests.
#[derive(Debug, thiserror::Error)]
#[error("injected failure on {0}")]
pub struct Injected(pub u64);

/// Sleeps for `us` microseconds without being rounded up by much.
pub fn busy_for(us: u64) {
    if us == 0 {
        return;
    }
    let end = std::time::Instant::now() + Duration::from_micros(us);
    if us > 300 {
        std::thread::sleep(Duration::from_micros(us - 200));
    }
    while std::time::Instant::now() < end {
        std::hint::spin_loop();
    }
}
