//! The synchronization primitives of the runtime's hand-written protocols, switched to `loom`'s
//! model-checked versions under `cfg(loom)` (see the `loom_tests` modules in `link` and
//! `admission`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{RwLock, RwLockReadGuard};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{RwLock, RwLockReadGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;
