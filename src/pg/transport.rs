//! The bytes under a PostgreSQL connection: plain TCP, or TLS over may's `TcpStream`.
//!
//! [`negotiate`] asks the server for TLS (PostgreSQL's SSLRequest) as `sslmode` says and runs
//! the handshake. The resulting [`Stream`] reads and writes synchronously for startup; the
//! pipeline then takes it apart: a [`WriteHalf`] for its writer coroutine, a [`ReadHalf`] for
//! its reader, and a [`ShutdownHandle`] to end the connection from anywhere.
//!
//! With TLS both halves share ONE rustls session behind a mutex, and neither does I/O while
//! holding it. The reader reads ciphertext from the socket unlocked, then locks, feeds it to
//! the session, decrypts and takes the plaintext, and unlocks. The writer locks, encrypts its
//! plaintext, takes the resulting records into its own buffer, unlocks, and writes the socket.
//! Only the writer ever writes the socket, so records leave in the order the session made them.
//! When the reader's processing makes records to send (an alert, a KeyUpdate answer), it wakes
//! the writer, whose `flush` (called before it sleeps) sends them.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use may::net::TcpStream;
use postgres_protocol::message::frontend;
use rustls::ClientConnection;
use rustls_pki_types::ServerName;

use super::error::{Error, ErrorKind};
use super::tls::{self, TlsConfig};
use super::SslMode;

/// Ciphertext read from the socket per system call, at most.
const INCOMING: usize = 32 * 1024;

/// A connection during startup: plain or TLS, read and written synchronously.
pub(crate) struct Stream {
    reader: ReadHalf,
    /// Set once the write half has been handed out: from then on only it may write.
    writer_taken: AtomicBool,
}

/// The reading side: the original socket, and the TLS session's reading state if TLS is up.
pub(crate) struct ReadHalf {
    tcp: TcpStream,
    tls: Option<TlsReader>,
}

/// The writing side: a clone of the socket, and the shared TLS session if TLS is up.
pub(crate) struct WriteHalf {
    tcp: TcpStream,
    session: Option<Arc<Session>>,
    /// Records taken from the session, waiting to be written.
    records: Vec<u8>,
}

/// Shuts the connection down from any coroutine or thread: its own duplicate of the socket,
/// so it never acts on a descriptor number that was closed and reused.
pub(crate) struct ShutdownHandle(std::net::TcpStream);

impl ShutdownHandle {
    /// Shuts both directions: the reader sees the end of the stream, the writer an error.
    pub(crate) fn shutdown(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// One TLS session shared by the reader and the writer.
struct Session {
    conn: Mutex<ClientConnection>,
    /// The coroutine that writes the socket, to wake when reading left records to send. The
    /// write half registers the coroutine that calls its `flush`.
    writer: OnceLock<may::coroutine::Coroutine>,
    /// The `tls-server-end-point` channel binding data, if the certificate allows it.
    end_point: Option<Vec<u8>>,
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, ClientConnection> {
        crate::sync::lock(&self.conn)
    }

    fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }
}

struct TlsReader {
    session: Arc<Session>,
    incoming: Incoming,
}

/// Ciphertext read from the socket and not yet given to the session.
struct Incoming {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Incoming {
    fn new() -> Incoming {
        Incoming {
            buf: vec![0; INCOMING].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Reads from the socket into the (empty) buffer; 0 at the end of the stream.
    fn fill(&mut self, tcp: &mut TcpStream) -> io::Result<usize> {
        debug_assert!(self.is_empty());
        self.start = 0;
        self.end = 0;
        let n = tcp.read(&mut self.buf)?;
        self.end = n;
        Ok(n)
    }

    /// Gives buffered ciphertext to the session; how much it took.
    fn feed(&mut self, conn: &mut ClientConnection) -> io::Result<usize> {
        let mut pending = &self.buf[self.start..self.end];
        let n = conn.read_tls(&mut pending)?;
        self.start += n;
        Ok(n)
    }
}

/// What one locked round of the reader produced.
enum Round {
    Plaintext(usize),
    /// Nothing decrypted and no ciphertext left: read the socket.
    NeedInput,
}

impl TlsReader {
    fn read(&mut self, tcp: &mut TcpStream, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.round(out)? {
                Round::Plaintext(n) => return Ok(n),
                Round::NeedInput => {}
            }
            // Wait for the server without holding the session: the writer keeps writing.
            if self.incoming.fill(tcp)? == 0 {
                // The end of the stream. PostgreSQL's messages carry their length, so a cut
                // one is never handed over; the caller sees the end of the connection.
                return Ok(0);
            }
        }
    }

    /// Under the lock: plaintext already decrypted, else decrypt buffered ciphertext.
    fn round(&mut self, out: &mut [u8]) -> io::Result<Round> {
        let TlsReader { session, incoming } = self;
        let mut conn = session.lock();
        let result = loop {
            match conn.reader().read(out) {
                // Ok(0): the server's close_notify.
                Ok(n) => break Ok(Round::Plaintext(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => break Err(e),
            }
            if incoming.is_empty() {
                break Ok(Round::NeedInput);
            }
            if incoming.feed(&mut conn)? == 0 {
                // close_notify already received: nothing more is read.
                break Ok(Round::Plaintext(0));
            }
            if let Err(e) = conn.process_new_packets() {
                break Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        if conn.wants_write() {
            // Records to send (an alert, a KeyUpdate answer): only the writer writes.
            session.wake_writer();
        }
        result
    }
}

impl Read for ReadHalf {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(tls) => tls.read(&mut self.tcp, out),
            None => self.tcp.read(out),
        }
    }
}

/// Encrypts `data` and writes the records, the socket write outside the lock.
fn write_tls_all(
    session: &Session,
    tcp: &mut TcpStream,
    records: &mut Vec<u8>,
    mut data: &[u8],
) -> io::Result<()> {
    loop {
        {
            let mut conn = session.lock();
            if !data.is_empty() {
                let n = conn.writer().write(data)?;
                data = &data[n..];
            }
            while conn.wants_write() {
                conn.write_tls(records)?;
            }
        }
        if records.is_empty() {
            if data.is_empty() {
                return Ok(());
            }
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the TLS session accepted no data",
            ));
        }
        let written = tcp.write_all(records);
        records.clear();
        written?;
        if data.is_empty() {
            return Ok(());
        }
    }
}

impl Write for WriteHalf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &self.session {
            Some(session) => {
                write_tls_all(session, &mut self.tcp, &mut self.records, data)?;
                Ok(data.len())
            }
            None => self.tcp.write(data),
        }
    }

    /// With TLS: sends the records the session holds (those the reader's processing made), and
    /// registers the calling coroutine as the one the reader wakes when there are more.
    fn flush(&mut self) -> io::Result<()> {
        match &self.session {
            Some(session) => {
                if session.writer.get().is_none() && may::coroutine::is_coroutine() {
                    let _ = session.writer.set(may::coroutine::current());
                }
                write_tls_all(session, &mut self.tcp, &mut self.records, &[])
            }
            None => Ok(()),
        }
    }
}

impl Stream {
    pub(crate) fn plain(tcp: TcpStream) -> Stream {
        Stream {
            reader: ReadHalf { tcp, tls: None },
            writer_taken: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.reader.tls.is_some()
    }

    /// The channel binding data for SCRAM-SHA-256-PLUS: `None` without TLS, or when the
    /// server's certificate has a signature algorithm without a defined hash.
    pub(crate) fn tls_server_end_point(&self) -> Option<Vec<u8>> {
        self.reader.tls.as_ref()?.session.end_point.clone()
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.tcp.set_read_timeout(timeout)
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.tcp.set_write_timeout(timeout)
    }

    /// The write half (on a clone of the socket) and a shutdown handle; once only. Afterwards
    /// the stream must not be written, only read, then turned into its read half.
    pub(crate) fn writer(&self) -> io::Result<(WriteHalf, ShutdownHandle)> {
        if self.writer_taken.swap(true, Ordering::AcqRel) {
            return Err(io::Error::other(
                "the connection's write half was already taken",
            ));
        }
        let tcp = self.reader.tcp.try_clone()?;
        let handle = ShutdownHandle(self.reader.tcp.inner().try_clone()?);
        let session = self.reader.tls.as_ref().map(|t| t.session.clone());
        Ok((
            WriteHalf {
                tcp,
                session,
                records: Vec::new(),
            },
            handle,
        ))
    }

    /// The read half: the original socket and the TLS reading state (with any ciphertext
    /// already buffered).
    pub(crate) fn into_reader(self) -> ReadHalf {
        self.reader
    }
}

impl Read for Stream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.reader.read(out)
    }
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        debug_assert!(!self.writer_taken.load(Ordering::Acquire));
        let reader = &mut self.reader;
        match &reader.tls {
            Some(tls) => {
                let mut records = Vec::new();
                write_tls_all(&tls.session, &mut reader.tcp, &mut records, data)?;
                Ok(data.len())
            }
            None => reader.tcp.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn remaining(deadline: Instant) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::new(
            ErrorKind::ConnectFailed,
            "PostgreSQL startup timed out during TLS negotiation",
        ));
    }
    Ok(left)
}

fn io_error(what: &str, e: io::Error) -> Error {
    Error::new(ErrorKind::ConnectFailed, format!("{what}: {e}"))
}

/// Asks for TLS as `tls.mode` says (libpq's sslmode) and runs the handshake, by `deadline`.
///
/// * disable: no request, plain TCP.
/// * prefer: TLS if the server answers 'S', plain TCP if 'N'; the certificate is not verified.
/// * require: TLS or an error; the certificate is verified like verify-ca if sslrootcert is set.
/// * verify-ca: the certificate chains to a CA of sslrootcert; the name is not checked.
/// * verify-full: and it names `host` (a DNS name, or an IP address in its subjectAltName).
pub(crate) fn negotiate(
    mut tcp: TcpStream,
    host: &str,
    tls: &TlsConfig,
    deadline: Instant,
) -> Result<Stream, Error> {
    let Some(config) = tls.config.clone() else {
        return Ok(Stream::plain(tcp));
    };
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        Error::new(
            ErrorKind::ConnectFailed,
            format!("{host:?} is neither a DNS name nor an IP address: cannot use it for TLS"),
        )
    })?;
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    tcp.set_write_timeout(Some(remaining(deadline)?)).ok();
    tcp.write_all(&request)
        .map_err(|e| io_error("cannot send the TLS request", e))?;
    // One read: the server sends its one-byte answer and waits for the handshake, so anything
    // after it in the same read was not sent by the server in answer to us.
    let mut answer = [0u8; 256];
    tcp.set_read_timeout(Some(remaining(deadline)?)).ok();
    let n = tcp
        .read(&mut answer)
        .map_err(|e| io_error("no answer to the TLS request", e))?;
    match (n, answer[0]) {
        (0, _) => {
            return Err(Error::new(
                ErrorKind::ConnectFailed,
                "the server closed the connection when asked for TLS",
            ))
        }
        (1, b'S') => {}
        (1, b'N') if tls.mode == SslMode::Prefer => return Ok(Stream::plain(tcp)),
        (1, b'N') => {
            return Err(Error::new(
                ErrorKind::ConnectFailed,
                format!(
                    "the server does not support TLS and sslmode={}",
                    tls::mode_name(tls.mode)
                ),
            ))
        }
        (_, b'S' | b'N') => {
            // CVE-2021-23222: bytes injected between the answer and the handshake would be
            // read as if they had come through TLS.
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "the server sent {} unexpected bytes after its answer to the TLS request \
                     and before the handshake; refused (possible man-in-the-middle injection)",
                    n - 1
                ),
            ));
        }
        (_, b'E') => {
            return Err(Error::new(
                ErrorKind::ConnectFailed,
                "the server answered the TLS request with an error (a server older than \
                 PostgreSQL 7.0, or not PostgreSQL)",
            ))
        }
        (_, other) => {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "the server answered the TLS request with the unexpected byte {other:#04x}"
                ),
            ))
        }
    }

    let mut conn = ClientConnection::new(config, name)
        .map_err(|e| Error::new(ErrorKind::ConnectFailed, format!("TLS: {e}")))?;
    let mut incoming = Incoming::new();
    loop {
        while conn.wants_write() {
            tcp.set_write_timeout(Some(remaining(deadline)?)).ok();
            conn.write_tls(&mut tcp)
                .map_err(|e| io_error("TLS handshake", e))?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if incoming.is_empty() {
            tcp.set_read_timeout(Some(remaining(deadline)?)).ok();
            let n = incoming
                .fill(&mut tcp)
                .map_err(|e| io_error("TLS handshake", e))?;
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::ConnectFailed,
                    "the server closed the connection during the TLS handshake",
                ));
            }
        }
        incoming
            .feed(&mut conn)
            .map_err(|e| io_error("TLS handshake", e))?;
        if let Err(e) = conn.process_new_packets() {
            // Send the alert rustls queued, best effort.
            let _ = conn.write_tls(&mut tcp);
            let error = Error::new(
                ErrorKind::ConnectFailed,
                tls::describe(&e, host, tls.roots.as_deref()),
            );
            // Our verification refused the certificate: the same at every attempt until
            // sslrootcert, the host name or the server's certificate changes. Only when a
            // verification was asked for (`roots`): without one, a malformed certificate is the
            // peer's fault, and an on-path peer must not be able to stop the service with it.
            return Err(match e {
                rustls::Error::InvalidCertificate(_) if tls.roots.is_some() => {
                    error.tls_misconfigured()
                }
                _ => error,
            });
        }
    }
    // Encrypt whatever the pipeline hands over in one go, without a cap.
    conn.set_buffer_limit(None);
    let end_point = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| tls::server_end_point(cert));
    Ok(Stream {
        reader: ReadHalf {
            tcp,
            tls: Some(TlsReader {
                session: Arc::new(Session {
                    conn: Mutex::new(conn),
                    writer: OnceLock::new(),
                    end_point,
                }),
                // Records the server sent right after the handshake (session tickets) stay.
                incoming,
            }),
        },
        writer_taken: AtomicBool::new(false),
    })
}

/// The rustls error inside an I/O error from a TLS stream, as a sentence.
pub(crate) fn describe_io(e: &io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(tls::describe(inner, "the server", None))
}
