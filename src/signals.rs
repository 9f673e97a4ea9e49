//! Process-level plumbing: waiting for SIGTERM/SIGINT on a dedicated thread instead of in a
//! signal handler, and raising the open-file limit.

/// SIGTERM and SIGINT, blocked in every thread so that [`TerminationSignals::wait`] receives them.
pub struct TerminationSignals {
    set: libc::sigset_t,
}

/// Blocks SIGTERM and SIGINT in the calling thread; threads spawned afterwards inherit the mask.
/// Call first thing in `main`.
pub fn block_termination_signals() -> TerminationSignals {
    // SAFETY: sigset manipulation on a local, then pthread_sigmask on the current thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        TerminationSignals { set }
    }
}

impl TerminationSignals {
    /// Blocks the calling thread until SIGTERM or SIGINT arrives; returns its name.
    pub fn wait(&self) -> &'static str {
        let mut sig: libc::c_int = 0;
        loop {
            // SAFETY: `set` was initialised by `block_termination_signals`.
            let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
            if rc == 0 {
                return if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
            }
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur as u64
    }
}
