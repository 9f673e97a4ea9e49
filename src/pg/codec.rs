//! The wire format this client writes and the first check on what it reads: a query's
//! Parse/Bind/Execute messages with its parameters in binary, and the bound on a backend
//! message's declared length. Shared by the startup (which runs before the pipeline) and the
//! pipeline, so that neither depends on the other.

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::error::{Error, ErrorKind};
use super::Param;

/// Refuses a backend message whose declared length is beyond `max` before anything is reserved
/// for it (`Message::parse` would reserve the declared length, and the read loop zero-fill it:
/// a length near 4 GiB from a buggy proxy would cost gigabytes).
pub(crate) fn check_frame(buf: &[u8], max: usize) -> Result<(), Error> {
    if buf.len() < 5 {
        return Ok(());
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > max {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "the server sent a {:?} message of {len} bytes, over the limit of {max} \
                 (PG_MAX_MESSAGE_BYTES); closing the connection",
                buf[0] as char
            ),
        ));
    }
    Ok(())
}

/// How a query names its statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Bind to the statement prepared on this connection under its name.
    Named,
    /// Close and Parse the named statement again first (its cached plan went stale), after
    /// a trial Parse of the unnamed statement: should the SQL no longer parse, the server
    /// skips the rest, Close included, and the old statement stays (closed, it would be
    /// missing, and `auto` mode would take that for a transaction pooler).
    Reprepare,
    /// Parse it as the unnamed statement, in the same message: lives until the next Parse.
    Unnamed,
    /// Close and Parse the named statement in the first query of each transaction (each
    /// shared-Sync group, each own-Sync query) that uses it, then Bind it by name: a
    /// transaction pooler keeps a transaction on one server connection, so the statement is
    /// there for the rest of the group. The caller's bit (`1 << index`) marks it prepared.
    PerTransaction(u64),
}

/// Encodes a query: Bind and Execute (after a Parse, as `encoding` says); the pipeline adds
/// the Sync.
pub(crate) fn encode_query(
    encoding: Encoding,
    (name, sql): (&str, &str),
    params: &[Param<'_>],
    buf: &mut BytesMut,
    prepared_in_transaction: &mut u64,
) -> Result<(), Error> {
    use postgres_protocol::IsNull;
    let parse_error =
        |e: std::io::Error| Error::new(ErrorKind::Protocol, format!("cannot encode Parse: {e}"));
    let name = match encoding {
        Encoding::Named => name,
        Encoding::Reprepare => {
            frontend::parse("", sql, std::iter::empty(), buf).map_err(parse_error)?;
            frontend::close(b'S', name, buf).map_err(parse_error)?;
            frontend::parse(name, sql, std::iter::empty(), buf).map_err(parse_error)?;
            name
        }
        Encoding::Unnamed => {
            frontend::parse("", sql, std::iter::empty(), buf).map_err(parse_error)?;
            ""
        }
        Encoding::PerTransaction(bit) => {
            if *prepared_in_transaction & bit == 0 {
                frontend::close(b'S', name, buf).map_err(parse_error)?;
                frontend::parse(name, sql, std::iter::empty(), buf).map_err(parse_error)?;
                *prepared_in_transaction |= bit;
            }
            name
        }
    };
    frontend::bind(
        "",
        name,
        Some(1),
        params.iter(),
        |param, buf| {
            use bytes::BufMut;
            match *param {
                Param::Int4(v) => buf.put_i32(v),
                Param::Int8(v) => buf.put_i64(v),
                Param::Text(s) => buf.put_slice(s.as_bytes()),
                Param::Null => return Ok(IsNull::Yes),
            }
            Ok(IsNull::No)
        },
        Some(1),
        buf,
    )
    .map_err(|_| Error::new(ErrorKind::Protocol, "cannot encode query parameters"))?;
    frontend::execute("", 0, buf)
        .map_err(|e| Error::new(ErrorKind::Protocol, format!("cannot encode Execute: {e}")))
}
