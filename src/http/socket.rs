//! Socket options and queries on a connection's descriptor, shared by the connection (which
//! bounds its kernel send buffer and looks at what is still queued) and the watchdog (which
//! cuts a connection whose queue did not drain in time).
//!
//! Must never block: each function is one system call on a descriptor the caller keeps open.

use may::net::TcpStream;

/// `SIOCOUTQNSD` (linux/sockios.h): the bytes of a socket's send queue not yet sent. The libc
/// crate does not define it.
const SIOCOUTQNSD: u64 = 0x894B;

/// Bytes written to socket `fd` that the kernel has not sent yet (`SIOCOUTQNSD`); 0 if the
/// kernel will not say. Not `SIOCOUTQ`, which also counts bytes sent and not yet acknowledged:
/// right after a write those are there on every healthy connection (acknowledgements are
/// delayed), so every answer would look held and be looked at again. Unsent bytes pile up only
/// when the peer's window is closed: a client that does not read.
pub(super) fn unsent_bytes(fd: i32) -> usize {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through a valid pointer; on a descriptor that is not
    // a TCP socket it fails and nothing is written.
    let ok = unsafe { libc::ioctl(fd, SIOCOUTQNSD as _, &mut queued as *mut libc::c_int) } == 0;
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::unsent_bytes;

    /// Bytes the peer's closed window holds back are counted; once it reads, none are.
    #[test]
    fn unsent_bytes_are_what_a_peer_that_does_not_read_holds_back() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(unsent_bytes(server.as_raw_fd()), 0, "nothing written yet");
        server.set_nonblocking(true).unwrap();
        let chunk = [7u8; 64 * 1024];
        let mut written = 0usize;
        loop {
            match server.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let held = unsent_bytes(server.as_raw_fd());
        assert!(held > 0 && held <= written, "{held} of {written} held back");
        let mut buf = vec![0u8; 256 * 1024];
        let mut read = 0;
        while read < written {
            read += client.read(&mut buf).unwrap();
        }
        assert_eq!(
            unsent_bytes(server.as_raw_fd()),
            0,
            "all of it sent once read"
        );
    }
}
