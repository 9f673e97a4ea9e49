//! Socket options and queries on a connection's descriptor, shared by the connection (which
//! bounds its kernel send buffer and looks at what is still queued) and the watchdog (which
//! cuts a connection whose queue did not drain in time).
//!
//! Must never block: each function is one system call on a descriptor the caller keeps open.

use may::net::TcpStream;

/// Bytes written to socket `fd` that its peer has not acknowledged yet (`SIOCOUTQ`: sent and
/// unacknowledged, or not sent at all); 0 if the kernel will not say.
pub(super) fn unsent_bytes(fd: i32) -> usize {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ for sockets) writes one int through a valid pointer.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued as *mut libc::c_int) } == 0;
    if ok {
        usize::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

/// Sets `stream`'s kernel send buffer (`SO_SNDBUF`) to `bytes`; 0 leaves the kernel's default.
pub(super) fn set_send_buffer(stream: &TcpStream, bytes: usize) {
    use std::os::fd::AsRawFd;
    let Ok(value) = libc::c_int::try_from(bytes) else {
        return;
    };
    if value == 0 {
        return;
    }
    // SAFETY: setsockopt on a socket we own, with a valid pointer and length.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Cuts a late connection: its blocked write fails with EPIPE, its read returns, and when it
/// closes, the kernel resets the connection and frees its send queue at once (a plain close
/// would keep trying to deliver it).
pub(super) fn cut_with_reset(fd: i32) {
    let abort = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the caller guarantees the descriptor is open (in the server, its entry is in the
    // registry, whose lock the caller holds). setsockopt reads a valid `linger` of the stated length.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&abort as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}
