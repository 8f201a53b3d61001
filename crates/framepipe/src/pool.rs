//! A pool of reusable buffers, so that a pipeline in steady state allocates nothing per frame.
//!
//! A stage takes a buffer ([`Pool::take`]), fills it and sends it on inside its output; whichever
//! stage drops the [`Pooled`] guard returns the buffer to the pool, from any thread. Size a pool by
//! the number of frames that can be alive at once (`max_in_flight` plus what stages hold): when it runs
//! dry it allocates a new buffer and counts a miss, rather than block.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

struct Inner<T> {
    free_tx: Sender<T>,
    free_rx: Receiver<T>,
    make: Box<dyn Fn() -> T + Send + Sync>,
    created: AtomicU64,
    misses: AtomicU64,
}

/// A pool of reusable values (frame buffers, tensors). Cheap to clone; clones share the pool.
pub struct Pool<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Pool { inner: self.inner.clone() }
    }
}

impl<T: Send + 'static> Pool<T> {
    /// A pool that keeps up to `capacity` idle values, pre-filled with `prefill` values from `make`.
    pub fn new(capacity: usize, prefill: usize, make: impl Fn() -> T + Send + Sync + 'static) -> Self {
        let capacity = capacity.max(1);
        let (free_tx, free_rx) = crossbeam_channel::bounded(capacity);
        let inner =
            Inner { free_tx, free_rx, make: Box::new(make), created: AtomicU64::new(0), misses: AtomicU64::new(0) };
        for _ in 0..prefill.min(capacity) {
            inner.created.fetch_add(1, Ordering::Relaxed);
            let _ = inner.free_tx.try_send((inner.make)());
        }
        Pool { inner: Arc::new(inner) }
    }

    /// An idle value, or a new one (counted as a miss) if none is idle. The value is returned to the
    /// pool when the guard drops; it keeps its contents, so a user overwrites what it needs.
    pub fn take(&self) -> Pooled<T> {
        let value = match self.inner.free_rx.try_recv() {
            Ok(v) => v,
            Err(_) => {
                self.inner.misses.fetch_add(1, Ordering::Relaxed);
                self.inner.created.fetch_add(1, Ordering::Relaxed);
                (self.inner.make)()
            }
        };
        Pooled { value: Some(value), pool: self.inner.clone() }
    }

    /// How many values the pool has ever created.
    pub fn created(&self) -> u64 {
        self.inner.created.load(Ordering::Relaxed)
    }

    /// How many times [`take`](Pool::take) found no idle value.
    pub fn misses(&self) -> u64 {
        self.inner.misses.load(Ordering::Relaxed)
    }

    /// How many values are idle now.
    pub fn idle(&self) -> usize {
        self.inner.free_rx.len()
    }
}

/// A value on loan from a [`Pool`]; it goes back when dropped.
pub struct Pooled<T> {
    value: Option<T>,
    pool: Arc<Inner<T>>,
}

impl<T> Pooled<T> {
    /// Takes the value out for good; it will not return to the pool.
    pub fn detach(mut self) -> T {
        self.value.take().expect("a pooled value is present until drop")
    }
}

impl<T> Deref for Pooled<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("a pooled value is present until drop")
    }
}

impl<T> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("a pooled value is present until drop")
    }
}

impl<T> Drop for Pooled<T> {
    fn drop(&mut self) {
        if let Some(v) = self.value.take() {
            // A full pool means more values are alive than it keeps idle: let this one go.
            let _ = self.pool.free_tx.try_send(v);
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Pooled<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_and_are_reused() {
        let pool = Pool::new(2, 2, || vec![0u8; 16]);
        assert_eq!(pool.created(), 2);
        {
            let mut a = pool.take();
            a[0] = 7;
            let _b = pool.take();
            assert_eq!(pool.idle(), 0);
        }
        assert_eq!(pool.idle(), 2);
        let a = pool.take();
        let b = pool.take();
        assert!(a[0] == 7 || b[0] == 7, "a returned buffer keeps its contents");
        assert_eq!((pool.created(), pool.misses()), (2, 0));
        let _c = pool.take();
        assert_eq!((pool.created(), pool.misses()), (3, 1));
    }

    #[test]
    fn returns_from_another_thread() {
        let pool = Pool::new(1, 1, || 5u32);
        let v = pool.take();
        std::thread::spawn(move || drop(v)).join().unwrap();
        assert_eq!(pool.idle(), 1);
    }
}
