//! A row as the server sent it: the `DataRow` message body, shared with the connection's read
//! buffer (no copy). Values are decoded on access; text borrows straight from those bytes, so a
//! handler can serialize it into its response without an intermediate `String`.

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::DataRowBody;

use super::error::{Error, ErrorKind};

#[derive(Debug, Clone)]
pub struct Row {
    body: DataRowBody,
}

impl Row {
    pub(crate) fn new(body: DataRowBody) -> Row {
        Row { body }
    }

    /// A row from a parsed `DataRow` message (for benchmarks and tests of decoding).
    pub fn from_body(body: DataRowBody) -> Row {
        Row { body }
    }

    /// The raw bytes of column `idx`, or `None` for SQL NULL.
    pub fn raw(&self, idx: usize) -> Result<Option<&[u8]>, Error> {
        let range = self
            .body
            .ranges()
            .nth(idx)
            .map_err(|e| decode_error(format!("malformed row: {e}")))?
            .ok_or_else(|| decode_error(format!("the row has no column {idx}")))?;
        Ok(range.map(|r| &self.body.buffer()[r]))
    }

    /// Column `idx` as text (any text-like type: text, varchar, citext), borrowed from the row.
    pub fn text(&self, idx: usize) -> Result<Option<&str>, Error> {
        match self.raw(idx)? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| decode_error(format!("column {idx} is not UTF-8"))),
        }
    }

    /// Column `idx` as an `int4` in binary format.
    pub fn int4(&self, idx: usize) -> Result<Option<i32>, Error> {
        match self.raw(idx)? {
            None => Ok(None),
            Some(bytes) => bytes
                .try_into()
                .map(|b| Some(i32::from_be_bytes(b)))
                .map_err(|_| decode_error(format!("column {idx} is not a binary int4"))),
        }
    }

    /// Column `idx` as an `int8` in binary format.
    pub fn int8(&self, idx: usize) -> Result<Option<i64>, Error> {
        match self.raw(idx)? {
            None => Ok(None),
            Some(bytes) => bytes
                .try_into()
                .map(|b| Some(i64::from_be_bytes(b)))
                .map_err(|_| decode_error(format!("column {idx} is not a binary int8"))),
        }
    }
}

impl Row {
    /// Column `idx` as an integer in binary format, `int4` or `int8` (told apart by width), so
    /// that a reader keeps working when a column is widened (`ALTER ... TYPE bigint`).
    pub fn integer(&self, idx: usize) -> Result<Option<i64>, Error> {
        match self.raw(idx)? {
            None => Ok(None),
            Some(bytes) => match bytes.len() {
                4 => Ok(Some(i64::from(i32::from_be_bytes(
                    bytes.try_into().unwrap_or_default(),
                )))),
                8 => Ok(Some(i64::from_be_bytes(
                    bytes.try_into().unwrap_or_default(),
                ))),
                _ => Err(decode_error(format!(
                    "column {idx} is not a binary int4 or int8"
                ))),
            },
        }
    }
}

fn decode_error(message: String) -> Error {
    Error::new(ErrorKind::Protocol, message)
}
