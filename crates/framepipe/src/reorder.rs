//! The reorder step: puts envelopes back into sequence order after a replicated stage.
//!
//! This is oneTBB's `serial_in_order` filter: the step releases sequence number `n` only after it has
//! released `n - 1`. Because at most `max_in_flight` frames are numbered and not yet delivered, an
//! arriving sequence number is always within `max_in_flight` of the next one to release, so a ring of
//! `max_in_flight` slots indexed by `seq % max_in_flight` holds every early arrival and never grows.

use crate::envelope::Envelope;

pub(crate) struct Reorder<T> {
    slots: Vec<Option<Envelope<T>>>,
    next: u64,
    held: usize,
}

impl<T> Reorder<T> {
    pub(crate) fn new(window: usize) -> Self {
        let window = window.max(1);
        Reorder { slots: (0..window).map(|_| None).collect(), next: 0, held: 0 }
    }

    /// Takes an envelope. Returns it straight back if it is the next one in order; otherwise holds it
    /// and returns `None`.
    pub(crate) fn insert(&mut self, env: Envelope<T>) -> Option<Envelope<T>> {
        if env.seq == self.next {
            self.next += 1;
            return Some(env);
        }
        let w = self.slots.len() as u64;
        assert!(
            env.seq > self.next && env.seq - self.next < w,
            "sequence number {} outside the reorder window [{}, {}): the in-flight cap was broken",
            env.seq,
            self.next,
            self.next + w
        );
        let slot = &mut self.slots[(env.seq % w) as usize];
        debug_assert!(slot.is_none(), "two frames with one sequence number");
        *slot = Some(env);
        self.held += 1;
        None
    }

    /// The next envelope in order, if it has arrived.
    pub(crate) fn pop_ready(&mut self) -> Option<Envelope<T>> {
        if self.held == 0 {
            return None;
        }
        let w = self.slots.len() as u64;
        let env = self.slots[(self.next % w) as usize].take()?;
        self.next += 1;
        self.held -= 1;
        Some(env)
    }

    /// How many envelopes are held waiting for an earlier one.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Takes every held envelope, lowest sequence number first (used only when an upstream link ended
    /// with a gap, which the runtime's invariants rule out).
    pub(crate) fn drain_held(&mut self) -> Vec<Envelope<T>> {
        let mut out: Vec<Envelope<T>> = self.slots.iter_mut().filter_map(|s| s.take()).collect();
        out.sort_by_key(|e| e.seq);
        self.held = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn env(seq: u64) -> Envelope<u64> {
        Envelope::new(seq, 0, Instant::now(), Ok(seq))
    }

    #[test]
    fn releases_in_order_whatever_the_arrival_order() {
        let mut r = Reorder::new(4);
        let mut out = vec![];
        for seq in [2, 0, 3, 1, 5, 4, 6, 9, 8, 7] {
            if let Some(e) = r.insert(env(seq)) {
                out.push(e.seq);
            }
            while let Some(e) = r.pop_ready() {
                out.push(e.seq);
            }
        }
        assert_eq!(out, (0..10).collect::<Vec<_>>());
        assert_eq!(r.held(), 0);
    }

    #[test]
    #[should_panic(expected = "outside the reorder window")]
    fn a_frame_beyond_the_window_is_a_broken_invariant() {
        let mut r = Reorder::new(2);
        r.insert(env(5));
    }
}
