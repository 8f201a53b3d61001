//! Sources: what a pipeline can run on its own thread to produce frames.

use std::time::Duration;

/// Produces frames on the pipeline's source thread (a file decoder, a camera).
///
/// The runtime calls [`next`](Source::next) in a loop, stamps each frame's capture time when `next`
/// returns, records how long `next` took as the source's service time, and offers the frame at the
/// entrance under the pipeline's admission policy. An `Err` travels as a
/// [`Tombstone::Source`](crate::Tombstone::Source) in its own slot and is counted; the source may go
/// on after it or end. `None` ends the stream: the pipeline then drains and its output ends.
pub trait Source {
    /// The frames it produces.
    type Item: Send + 'static;
    /// Why it can fail to produce a frame.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The next frame, an error for one frame, or `None` at the end of the stream.
    fn next(&mut self) -> Option<Result<Self::Item, Self::Error>>;

    /// Lifecycle hook: called once on the source thread before the first `next`.
    fn on_start(&mut self) {}

    /// Lifecycle hook: called once on the source thread after the last `next`.
    fn on_stop(&mut self) {}
}

/// An iterator as a source of infallible frames.
pub struct IterSource<I>(pub I);

impl<I> Source for IterSource<I>
where
    I: Iterator,
    I::Item: Send + 'static,
{
    type Item = I::Item;
    type Error = std::convert::Infallible;
    fn next(&mut self) -> Option<Result<I::Item, Self::Error>> {
        self.0.next().map(Ok)
    }
}

/// How the source thread is paced.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Pace {
    /// Read a frame only when it can flow through every stage without waiting (see the `flow` notes
    /// in the architecture docs): throughput at the bound, latency near the sum of the stages. The
    /// default for a file. Several such sources share one schedule and take turns; a source paced
    /// otherwise, or an entrance that drops frames, makes every source run free.
    #[default]
    JustInTime,
    /// As fast as admission accepts frames: queues fill, and latency grows to the frames in flight
    /// times the slowest stage's period. Trades latency for nothing but a little throughput under
    /// jitter; here to measure that.
    Free,
    /// One frame per period, like a camera: frame `n` is read no earlier than `start + n × period`.
    /// A source that falls behind is not made to catch up in a burst.
    Period(Duration),
}

impl Pace {
    /// Paces at `fps` frames per second (`Free` for a non-positive or non-finite rate).
    pub fn fps(fps: f64) -> Self {
        if fps.is_finite() && fps > 0.0 {
            Pace::Period(Duration::from_secs_f64(1.0 / fps))
        } else {
            Pace::Free
        }
    }
}
