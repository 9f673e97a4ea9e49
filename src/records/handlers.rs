//! The handlers: one method per route, each reading its input (`input`), asking the repository,
//! and writing JSON straight into the response body. Every failure is returned as a
//! [`Failure`]; none is written here.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::http::{Request, Response};
use crate::metrics::Format;
use crate::pg;

use super::email::EmailAddress;
use super::failure::{Failure, Handled, INVALID_PAYLOAD};
use super::input::{
    parse_i64, parse_id, required_email, text_payload, PathId, MAX_PAGE, MAX_TEXT_CHARS,
};
use super::query::param;
use super::routes::{RecordsService, LAST_CHECK_FAILED, LAST_CHECK_READY};

#[derive(Serialize)]
struct RecordJson<'a> {
    id: i64,
    email: &'a str,
    text: Option<&'a str>,
}

impl RecordsService {
    pub(super) fn get_by_id(&self, affinity: u64, raw: &str, res: &mut Response<'_>) -> Handled {
        let Some(id) = parse_id(raw) else {
            // A path segment that is not an integer: the original's validation error.
            if raw.is_empty() || raw.contains('/') {
                return Err(Failure::not_found());
            }
            return Err(Failure::bad_request(INVALID_PAYLOAD));
        };
        // Outside int4 no record can exist: 404 without asking the database.
        let Ok(id32) = i32::try_from(id.value) else {
            return Err(record_not_found(&id));
        };
        let row = self.repo.by_id(affinity, id32);
        write_record(&id, row, res)
    }

    pub(super) fn get_by_email(
        &self,
        req: &Request<'_>,
        affinity: u64,
        res: &mut Response<'_>,
    ) -> Handled {
        let email = required_email(req)?;
        let row = self
            .repo
            .text_by_email(affinity, &email)?
            .ok_or_else(|| email_not_found(&email))?;
        write_json(res, &[row.text(0)?]);
        Ok(())
    }

    pub(super) fn upsert(
        &self,
        req: &Request<'_>,
        affinity: u64,
        res: &mut Response<'_>,
    ) -> Handled {
        // The original validated the body before the handler ran; keep that order.
        let payload = text_payload(req.body())?;
        let raw = required_email(req)?;
        let email = EmailAddress::parse(&raw).map_err(|_| invalid_email(&raw))?;
        if payload.text.contains('\0') {
            // PostgreSQL's text cannot hold NUL: refused here, not answered 500 by the server.
            return Err(Failure::BadRequest(
                "Text must not contain NUL (\\u0000) characters".into(),
            ));
        }
        if payload.text.chars().count() > MAX_TEXT_CHARS {
            return Err(text_too_long());
        }
        self.repo.upsert(affinity, email, &payload.text)?;
        res.body_mut().extend_from_slice(b"null");
        Ok(())
    }

    pub(super) fn delete(
        &self,
        req: &Request<'_>,
        affinity: u64,
        res: &mut Response<'_>,
    ) -> Handled {
        let email = required_email(req)?;
        self.repo.delete(affinity, &email)?;
        res.body_mut().extend_from_slice(b"null");
        Ok(())
    }

    pub(super) fn list(&self, req: &Request<'_>, affinity: u64, res: &mut Response<'_>) -> Handled {
        let query = req.query();
        let bad = || Failure::bad_request(INVALID_PAYLOAD);
        let limit_raw = param(query, "limit").map_err(|_| bad())?;
        let offset_raw = param(query, "offset").map_err(|_| bad())?;
        let after = param(query, "after").map_err(|_| bad())?;
        let limit = match &limit_raw {
            Some(s) => parse_i64(s).ok_or_else(bad)?,
            None => MAX_PAGE,
        };
        let offset = match &offset_raw {
            Some(s) => parse_i64(s).ok_or_else(bad)?,
            None => 0,
        };
        if limit < 0 || offset < 0 {
            return Err(Failure::BadRequest(
                format!("Invalid limit or offset provided! Limit: {limit} Offset: {offset}").into(),
            ));
        }
        let limit = limit.min(MAX_PAGE);
        // `after=` (empty) is no position: the list from its start. With an offset, the page
        // starts that many rows after the key (the index is walked up to it: listing lane).
        let rows = match after {
            // An index probe, on the fast lane (an empty key is the start).
            Some(after) if offset == 0 => self.repo.page_after(affinity, &after, limit)?,
            Some(after) if !after.is_empty() => self
                .repo
                .page_after_offset(affinity, &after, limit, offset)?,
            _ => self.repo.page_offset(affinity, limit, offset)?,
        };
        let mut pairs: Vec<(&str, Option<&str>)> = Vec::with_capacity(rows.len());
        for row in &rows {
            pairs.push((row.text(0)?.unwrap_or(""), row.text(1)?));
        }
        write_json(res, &pairs);
        Ok(())
    }

    /// Ready when every connection of both lanes is up and the database answers a query.
    /// Not `fresh` (a client probing past its rate): the last check's outcome stands in for
    /// the query, so a flood of probes is not a flood of queries.
    pub(super) fn readyz(&self, affinity: u64, res: &mut Response<'_>, fresh: bool) -> Handled {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Failure::ShuttingDown);
        }
        if !self.repo.is_connected() {
            return Err(Failure::NotReady(pg::Error::unavailable(
                "not every PostgreSQL connection is up",
            )));
        }
        match self.last_check.load(Ordering::Relaxed) {
            LAST_CHECK_READY if !fresh => {}
            LAST_CHECK_FAILED if !fresh => {
                return Err(Failure::NotReady(pg::Error::unavailable(
                    "the database did not answer the last check",
                )))
            }
            _ => {
                let checked = self.repo.ping(affinity, Duration::from_secs(1));
                let outcome = match checked {
                    Ok(()) => LAST_CHECK_READY,
                    Err(_) => LAST_CHECK_FAILED,
                };
                self.last_check.store(outcome, Ordering::Relaxed);
                checked.map_err(Failure::NotReady)?;
            }
        }
        res.body_mut().extend_from_slice(br#"{"status":"ready"}"#);
        Ok(())
    }

    /// `/metrics`, in the format the scraper asks for.
    pub(super) fn metrics(&self, req: &Request<'_>, res: &mut Response<'_>) -> Handled {
        let format = Format::negotiate(req.header("accept"));
        let text = self.exporter.render(format);
        res.content_type(format.content_type());
        res.body_mut().extend_from_slice(text.as_bytes());
        Ok(())
    }

    /// A static file: its bytes are shared with the answer, not copied
    /// ([`super::assets::Asset::answer`]).
    pub(super) fn asset(&self, req: &Request<'_>, name: &str, res: &mut Response<'_>) -> Handled {
        let asset = self.assets.get(name).ok_or_else(Failure::not_found)?;
        asset.answer(req, res);
        Ok(())
    }
}

/// The answer to `GET /user/{id}` from its row. Out of line, like [`record_not_found`]: what
/// they hold is not in the handler's frame while it waits for the database. That wait is the
/// deepest point of a connection's stack, and each stack page a connection touches stays
/// resident (`make test-stack` keeps it within one page).
#[inline(never)]
fn write_record(
    id: &PathId<'_>,
    row: Result<Option<pg::Row>, pg::Error>,
    res: &mut Response<'_>,
) -> Handled {
    let row = row?.ok_or_else(|| record_not_found(id))?;
    let record = RecordJson {
        id: row.integer(0)?.unwrap_or(id.value),
        email: row.text(1)?.unwrap_or(""),
        text: row.text(2)?,
    };
    write_json(res, &record);
    Ok(())
}

// The refusals that format a message are out of line, so that their formatting takes no room
// in the frame of a handler that then waits for the database.

#[cold]
#[inline(never)]
fn invalid_email(raw: &str) -> Failure {
    Failure::BadRequest(format!("Invalid email address provided! Email: {raw}").into())
}

#[cold]
#[inline(never)]
fn text_too_long() -> Failure {
    Failure::BadRequest(
        format!("Text is too long: at most {MAX_TEXT_CHARS} characters are allowed").into(),
    )
}

#[cold]
#[inline(never)]
fn email_not_found(email: &str) -> Failure {
    Failure::NotFound(format!("Record for email {email} was not found!").into())
}

#[cold]
#[inline(never)]
fn record_not_found(id: &PathId<'_>) -> Failure {
    Failure::NotFound(format!("Record with ID {id} was not found!").into())
}

#[inline(never)]
fn write_json<T: Serialize + ?Sized>(res: &mut Response<'_>, value: &T) {
    // Serializing plain structs of numbers and strings into a Vec cannot fail.
    let _ = sonic_rs::to_writer(res.body_mut(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_encoding_of_records() {
        let mut out = Vec::new();
        sonic_rs::to_writer(
            &mut out,
            &RecordJson {
                id: 1,
                email: "a\"b@c.com",
                text: None,
            },
        )
        .unwrap();
        assert_eq!(out, br#"{"id":1,"email":"a\"b@c.com","text":null}"#);
        out.clear();
        sonic_rs::to_writer(&mut out, &[("a@b.com", Some("hi")), ("c@d.com", None)]).unwrap();
        assert_eq!(out, br#"[["a@b.com","hi"],["c@d.com",null]]"#);
    }
}
