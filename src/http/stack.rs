//! The lowest page of a connection coroutine's stack, given back while the connection is open.
//!
//! may's coroutines run on stacks that the `generator` crate maps: a guard page, then the
//! stack, whose lowest 8 words `generator` fills with a sentinel when it maps it. When a
//! coroutine ends, may reads those words: a stack whose first word no longer holds the sentinel
//! is taken to have overflowed, and may prints "stack overflow detected" and exits the process.
//! That write keeps the stack's lowest page resident for the coroutine's whole life, 60 KiB
//! below anything a request touches (a request on the database path uses 4-5 KiB at the top,
//! `STACK_DEBUG=1`): 4 KiB of the 12 KiB an open keep-alive connection holds (issue 14).
//!
//! A connection that stays open (one that waits for a second request) gives the page back
//! (`MADV_DONTNEED`) and writes the sentinel again when it ends, before may reads it. Nothing
//! is done unless the page is found to be exactly that: the stack's bounds are worked out from
//! the stack pointer and may's configured stack size, then checked without touching them (the
//! words below the bottom must be unreadable, the guard page, and the bottom's words must hold
//! the sentinel). Anything else (not on a coroutine, another stack size, a later `generator`
//! that lays its stacks out otherwise, a kernel that refuses the reads) leaves the stack as it
//! is, and the connection simply keeps the page.

use std::mem::size_of;

/// `generator` 0.8's `STACK_SENTINEL`.
const SENTINEL: usize = 0xDEAD_BEEF;
/// `generator` 0.8's `STACK_USAGE_SAMPLE`: how many words at the bottom hold the sentinel.
const SENTINEL_WORDS: usize = 8;

/// The released bottom page of the current coroutine's stack; dropping it writes the sentinel
/// back (so a connection must drop it on its own coroutine, before the coroutine ends).
pub(crate) struct BottomPage {
    bottom: usize,
}

impl BottomPage {
    /// Gives back the lowest page of the current coroutine's stack, if it is found where
    /// `generator` puts it; `None` (nothing changed) otherwise.
    pub(crate) fn release() -> Option<BottomPage> {
        if !may::coroutine::is_coroutine() {
            return None;
        }
        let words = may::config().get_stack_size();
        // An odd size asks generator to track usage: the whole stack holds the sentinel then,
        // and the printed usage would be wrong without it.
        if words % 2 == 1 {
            return None;
        }
        let page = page_size()?;
        let bytes = words.checked_mul(size_of::<usize>())?;
        // generator's usable length: the size rounded up to whole pages.
        let usable = (bytes.checked_sub(1)? & !(page - 1)) + page;
        let marker = 0u8;
        let sp = std::ptr::addr_of!(marker) as usize;
        // Stacks are page-aligned mappings and a connection's frames sit well within the top
        // page of its stack (640 bytes below the top, measured), so the top is the next page
        // boundary; the checks below catch any other case.
        let top = (sp | (page - 1)) + 1;
        let bottom = top.checked_sub(usable)?;
        if usable < 4 * page || sp < bottom + 2 * page {
            return None;
        }
        let mut below = [0usize; 1];
        if readable(bottom - size_of::<usize>(), &mut below) {
            return None; // no guard page right below: not a generator stack of this size
        }
        let mut sentinel = [0usize; SENTINEL_WORDS];
        if !readable(bottom, &mut sentinel) || sentinel.iter().any(|&w| w != SENTINEL) {
            return None;
        }
        // SAFETY: [bottom, bottom + page) is the lowest page of the stack this code runs on,
        // which is mapped (it was just read), private and anonymous, and more than a page
        // below the stack pointer: nothing lives in it but the sentinel, rewritten on drop.
        // MADV_DONTNEED on such a page only drops its contents (it reads as zeros after).
        let rc = unsafe { libc::madvise(bottom as *mut libc::c_void, page, libc::MADV_DONTNEED) };
        (rc == 0).then_some(BottomPage { bottom })
    }
}

impl Drop for BottomPage {
    fn drop(&mut self) {
        let words = self.bottom as *mut usize;
        for i in 0..SENTINEL_WORDS {
            // SAFETY: the bottom words of this coroutine's stack, still mapped and writable
            // (release checked them; the coroutine has not ended, as this runs on it), and
            // unused by any frame (the stack pointer is pages above).
            unsafe { words.add(i).write_volatile(SENTINEL) };
        }
    }
}

fn page_size() -> Option<usize> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|p| p.is_power_of_two())
}

/// Reads `out.len()` words at `addr` into `out` without faulting: false when any of them is
/// not readable (process_vm_readv on this process answers EFAULT instead of a signal).
fn readable(addr: usize, out: &mut [usize]) -> bool {
    let len = std::mem::size_of_val(out);
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: the local iovec is `out`, which we own; the remote one is only read by the
    // kernel, which checks it.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    usize::try_from(n).is_ok_and(|n| n == len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_done_off_a_coroutine() {
        assert!(BottomPage::release().is_none());
    }

    #[test]
    fn unreadable_memory_is_reported_not_faulted_on() {
        let mut word = [0usize; 1];
        assert!(!readable(8, &mut word), "the zero page is unmapped");
        let value = [7usize, 9];
        let mut copy = [0usize; 2];
        assert!(readable(value.as_ptr() as usize, &mut copy));
        assert_eq!(copy, value);
    }
}
