//! The [`Stage`] trait and what a stage replica is given when it starts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One step of a pipeline: it turns an input into an output, or fails for that one frame.
///
/// A stage value is built on its own thread by the factory given to
/// [`PipelineBuilder::stage`](crate::PipelineBuilder::stage), one per replica, so it need not be
/// `Send`. State that replicas share (model weights) lives behind an `Arc` that the factory clones;
/// state a replica mutates (buffers, an inference session) lives in the stage value.
///
/// ```
/// use framepipe::Stage;
///
/// struct Double;
/// impl Stage<u32> for Double {
///     type Out = u64;
///     type Error = std::convert::Infallible;
///     fn process(&mut self, x: u32) -> Result<u64, Self::Error> {
///         Ok(2 * x as u64)
///     }
/// }
/// ```
pub trait Stage<In> {
    /// What the stage produces.
    type Out: Send + 'static;
    /// Why the stage can fail for one frame; the frame then travels on as a
    /// [`Tombstone::Error`](crate::Tombstone::Error) and the pipeline goes on.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Processes one frame. Called once per frame, in sequence order unless the stage is replicated.
    fn process(&mut self, input: In) -> Result<Self::Out, Self::Error>;

    /// Lifecycle hook: called once on the stage's own thread after pinning and priority are set and
    /// before the first frame. Warm-up work (a first inference, kernel compilation) belongs here, so
    /// that it shows up as start-up time and not as a slow first frame. An error aborts
    /// [`PipelineBuilder::build`](crate::PipelineBuilder::build).
    fn on_start(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Lifecycle hook: called once on the stage's own thread after its last frame, when the pipeline
    /// closes. Not called after the stage panicked.
    fn on_stop(&mut self) {}
}

/// A closure used as a stage (see [`stage_fn`]).
#[derive(Clone)]
pub struct FnStage<F>(pub F);

impl<In, Out, E, F> Stage<In> for FnStage<F>
where
    F: FnMut(In) -> Result<Out, E>,
    Out: Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    type Out = Out;
    type Error = E;
    fn process(&mut self, input: In) -> Result<Out, E> {
        (self.0)(input)
    }
}

/// Wraps a closure as a [`Stage`].
pub fn stage_fn<In, Out, E, F>(f: F) -> FnStage<F>
where
    F: FnMut(In) -> Result<Out, E>,
{
    FnStage(f)
}

/// What a stage factory is told about the replica it builds.
#[derive(Clone, Debug)]
pub struct StageContext {
    /// The stage's name.
    pub name: Arc<str>,
    /// Which replica this is (0-based).
    pub replica: usize,
    /// How many replicas the stage has.
    pub replicas: usize,
    /// Cooperative cancellation, fired by [`Pipeline::cancel`](crate::Pipeline::cancel) and by a
    /// close that runs past its grace period.
    pub cancel: CancelToken,
}

/// A cooperative cancellation flag that a stage can poll or wait on.
///
/// A stage that blocks for a long time inside [`Stage::process`] (on a device, a socket) should wait
/// on this token too, and return an error when it fires, so that shutdown never hangs.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<CancelInner>);

#[derive(Debug, Default)]
struct CancelInner {
    fired: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
}

impl CancelToken {
    /// A token that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the token, waking every waiter. Idempotent.
    pub fn cancel(&self) {
        let _guard = self.0.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.0.fired.store(true, Ordering::SeqCst);
        self.0.cond.notify_all();
    }

    /// Whether the token has fired.
    pub fn is_cancelled(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// Waits until the token fires or `timeout` passes; returns whether it fired.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let guard = self.0.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (_guard, _) = self
            .0
            .cond
            .wait_timeout_while(guard, timeout, |_| !self.0.fired.load(Ordering::SeqCst))
            .unwrap_or_else(|e| e.into_inner());
        self.is_cancelled()
    }

    /// Waits until the token fires.
    pub fn wait(&self) {
        let guard = self.0.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _guard =
            self.0.cond.wait_while(guard, |_| !self.0.fired.load(Ordering::SeqCst)).unwrap_or_else(|e| e.into_inner());
    }
}
