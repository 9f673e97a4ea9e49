//! A connection's share of the server-wide memory [`Budget`](crate::http::buffer::Budget):
//! growing the input buffer past its base within it, charging the budget for an answer larger
//! than what a connection keeps, and giving both back as soon as they are consumed (and, however
//! the connection ends, when it is dropped).
//!
//! Must never let a connection hold memory past its base buffers that the budget was not
//! charged for, nor keep a charge for memory it has let go: `held` and `held_out` are what
//! this connection took, no more and no less.

use super::{BodyProgress, Conn, Reading, Refusal, INITIAL_INPUT, INITIAL_OUTPUT};
use crate::http::chunked::MAX_SIZE_LINE;

/// Input buffer a connection may grow to outside the shared budget (the connection cap bounds
/// these); growth past it is taken from the budget.
pub(super) const BASE_INPUT: usize = 8 * 1024;
/// Output and response-body buffers are kept between requests up to this size each; larger
/// ones are returned once written (kept, they would be memory outside the budget for as long
/// as the connection idles).
const KEEP_OUTPUT: usize = 64 * 1024;

impl Drop for Conn<'_> {
    /// The budget is given back however the connection ends (a panic included).
    fn drop(&mut self) {
        self.shared.budget.give_back(self.held + self.held_out);
    }
}

impl Conn<'_> {
    /// Makes the input buffer's spare room non-empty, growing it within the budget.
    #[inline(never)]
    pub(super) fn make_room(&mut self) -> Result<(), Refusal> {
        if self.input.spare() > 0 {
            return Ok(());
        }
        let limits = &self.shared.config.limits;
        let capacity = self.input.capacity();
        let ceiling = match &self.reading {
            Reading::Body {
                body: BodyProgress::Length { end },
                ..
            } => *end,
            Reading::Body { head, .. } => {
                head.info.len + limits.max_body_bytes + MAX_SIZE_LINE + limits.max_head_bytes
            }
            _ => limits.max_head_bytes + BASE_INPUT,
        };
        let wanted = (capacity * 2).min(ceiling.max(capacity + BASE_INPUT));
        if self.reserve(wanted) {
            Ok(())
        } else {
            Err(Refusal::busy())
        }
    }

    /// Grows the input buffer to `capacity`, taking the growth past the base from the shared
    /// budget.
    fn reserve(&mut self, capacity: usize) -> bool {
        let current = self.input.capacity();
        if capacity <= current {
            return true;
        }
        let charge = capacity.saturating_sub(BASE_INPUT) - current.saturating_sub(BASE_INPUT);
        if charge > 0 && !self.shared.budget.try_take(charge) {
            return false;
        }
        self.held += charge;
        self.input.grow_to(capacity);
        true
    }

    /// Hands memory a large request or answer took back as soon as it is consumed, so a
    /// long-lived keep-alive connection holds only its small base buffers.
    pub(super) fn give_back_memory(&mut self) {
        self.drop_large_output();
        if self.held > 0 {
            if self.input.is_empty() {
                self.release_input();
            } else if !matches!(self.reading, Reading::Body { .. })
                && self.input.shrink_keeping(BASE_INPUT)
            {
                // A few bytes of the next request were read with a large one: they move to a
                // base buffer (no offsets point into the input outside a body), so that a
                // client cannot keep the large buffer by always leaving a byte behind.
                self.shared.budget.give_back(self.held);
                self.held = 0;
            }
        }
    }

    /// The output buffer beyond what any batch of ordinary answers may grow it to (a batch
    /// stops at `max_output_bytes`; with one answer past it, and doubling, twice that): the
    /// capacity the budget is charged for. Only an answer large on its own is charged.
    fn output_beyond_base(&self) -> usize {
        let batch = KEEP_OUTPUT.max(self.shared.config.limits.max_output_bytes);
        self.out.capacity().saturating_sub(2 * batch)
    }

    /// After an answer: frees what it no longer needs (the body buffer, whose content is in
    /// `out` now; the input buffer, if the request was all of it), then charges the budget for
    /// an output buffer that grew. False when the budget cannot cover it (nothing is charged).
    pub(super) fn charge_output(&mut self) -> bool {
        self.drop_large_body();
        if self.held > 0 && self.input.is_empty() {
            self.release_input();
        }
        let want = self.output_beyond_base();
        if want <= self.held_out {
            return true;
        }
        if !self.shared.budget.try_take(want - self.held_out) {
            return false;
        }
        self.held_out = want;
        true
    }

    /// Replaces buffers grown past the kept sizes (once their content is written or dropped)
    /// and gives their budget back.
    #[inline(never)]
    pub(super) fn drop_large_output(&mut self) {
        if self.out.capacity() > KEEP_OUTPUT {
            let kept = std::mem::take(&mut self.out);
            // Room for a refusal written after what is kept, without growing again.
            self.out = Vec::with_capacity(INITIAL_OUTPUT.max(kept.len() + 512));
            self.out.extend_from_slice(&kept);
        }
        self.drop_large_body();
        let still = self.output_beyond_base();
        if still < self.held_out {
            self.shared.budget.give_back(self.held_out - still);
            self.held_out = still;
        }
    }

    /// Replaces a response-body buffer grown past the kept size (its content is in `out`).
    fn drop_large_body(&mut self) {
        if self.scratch.capacity() > KEEP_OUTPUT {
            self.scratch = Vec::new();
        }
    }

    pub(super) fn release_input(&mut self) {
        self.input.clear_and_shrink(INITIAL_INPUT);
        self.shared.budget.give_back(self.held);
        self.held = 0;
    }
}
