//! Static files: `static/` read once at start into memory, served by exact name. A request can
//! only name a file that was found at start, so no path (`..`, encoded slashes, symlinks added
//! later) reaches outside the directory.
//!
//! Everything an answer needs is made once, at start: each text file's brotli and gzip
//! variants (kept only when smaller), and every variant's strong entity tag. An answer picks
//! the variant by `Accept-Encoding` and shares its bytes with the response (no copy per
//! request); `If-None-Match` is answered 304. Vendored files live in versioned directories
//! (`vendor/<package>-<version>/`, scripts/vendor-docs-assets.sh), so they may be cached for a
//! year; everything else is revalidated on every use.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sha2::Digest;

use crate::http::{Request, Response, Status};

/// Files larger than this are skipped (the largest vendored file, Swagger UI's bundle, is
/// 1.7 MB).
const MAX_FILE: u64 = 4 << 20;
const MAX_FILES: usize = 1000;
const MAX_DEPTH: usize = 8;

/// Brotli's quality, 0 to 11. 11 saves a few per cent more but compresses an order of
/// magnitude slower, and this runs at every start (and in every test server).
const BROTLI_QUALITY: u32 = 9;
/// Brotli's window, log2 bytes: 4 MiB, the largest the format allows without the "large
/// window" extension browsers do not support.
const BROTLI_WINDOW: u32 = 22;

/// A year, the longest RFC 9111 §5.2.2.1 suggests: for files whose name changes with their
/// content (a new version is a new path), so a cached copy is never stale.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Stored, but checked with the server (a 304 when unchanged) before every use.
const REVALIDATE: &str = "no-cache";

pub struct Assets {
    files: HashMap<String, Asset>,
}

impl Assets {
    /// Loads every regular file under `dir` (not following symlinks) and makes its variants.
    /// A missing directory gives an empty set and a warning.
    pub fn load(dir: &str) -> Assets {
        let started = Instant::now();
        let mut read = Vec::new();
        let root = Path::new(dir);
        if !root.is_dir() {
            tracing::warn!(
                event = "static_dir_missing",
                dir,
                "not a directory; / and /static/ will answer 404"
            );
        }
        walk(root, root, 0, &mut read);
        let files: HashMap<String, Asset> = read
            .into_iter()
            .map(|(name, bytes)| {
                let asset = Asset::new(&name, bytes);
                (name, asset)
            })
            .collect();
        tracing::info!(
            event = "static_loaded",
            files = files.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "static files read and compressed"
        );
        Assets { files }
    }

    /// The file at `name` (relative to the directory, `/`-separated).
    pub fn get(&self, name: &str) -> Option<&Asset> {
        self.files.get(name)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// One file and its variants.
pub struct Asset {
    content_type: &'static str,
    cache_control: &'static str,
    identity: Variant,
    br: Option<Variant>,
    gzip: Option<Variant>,
}

/// One representation of a file: its bytes as sent and their entity tag.
struct Variant {
    bytes: Arc<[u8]>,
    /// Quoted, strong: a hash of these very bytes, so two variants never share a tag.
    etag: Arc<str>,
    /// The `Content-Encoding` it is sent with; `None` for the file as it is.
    encoding: Option<&'static str>,
}

impl Variant {
    fn new(bytes: Vec<u8>, encoding: Option<&'static str>) -> Variant {
        let digest = sha2::Sha256::digest(&bytes);
        // 128 bits of SHA-256: collisions among a few files are out of reach.
        let mut etag = String::with_capacity(34);
        etag.push('"');
        for b in &digest[..16] {
            etag.push_str(&format!("{b:02x}"));
        }
        etag.push('"');
        Variant {
            bytes: bytes.into(),
            etag: etag.into(),
            encoding,
        }
    }
}

impl Asset {
    /// `bytes`, served as the file `name` (its extension gives the type, its directory the
    /// caching), with the compressed variants that save bytes.
    pub fn new(name: &str, bytes: Vec<u8>) -> Asset {
        let content_type = content_type(name);
        let (br, gzip) = if is_compressible(content_type) {
            let smaller = |v: Vec<u8>| (v.len() < bytes.len()).then_some(v);
            (
                brotli(&bytes)
                    .and_then(smaller)
                    .map(|v| Variant::new(v, Some("br"))),
                gzip(&bytes)
                    .and_then(smaller)
                    .map(|v| Variant::new(v, Some("gzip"))),
            )
        } else {
            (None, None)
        };
        Asset {
            content_type,
            cache_control: if is_versioned(name) {
                IMMUTABLE
            } else {
                REVALIDATE
            },
            identity: Variant::new(bytes, None),
            br,
            gzip,
        }
    }

    /// Answers a GET or HEAD for this file: the variant `req` accepts, or 304 when the client
    /// already holds it. The body is shared, never copied here; a HEAD's is never read.
    pub fn answer(&self, req: &Request<'_>, res: &mut Response<'_>) {
        let variant = self.negotiate(&Accepted::parse(header_values(req, "accept-encoding")));
        res.etag(variant.etag.clone())
            .header("Cache-Control", self.cache_control);
        if self.br.is_some() || self.gzip.is_some() {
            // Caches must key this answer on the request's Accept-Encoding (RFC 9110 §12.5.5),
            // the 304 included (§15.4.5).
            res.header("Vary", "Accept-Encoding");
        }
        if none_match(header_values(req, "if-none-match"), &variant.etag) {
            res.status(Status::NOT_MODIFIED);
            return;
        }
        if let Some(encoding) = variant.encoding {
            res.header("Content-Encoding", encoding);
        }
        res.content_type(self.content_type)
            .shared_body(variant.bytes.clone());
    }

    /// The acceptable variant with the highest q; on a tie, brotli (the smallest), then gzip,
    /// then the file as it is. When the client accepts none, the file as it is: RFC 9110
    /// §12.5.3 allows that rather than a 406, and a browser always can read it.
    fn negotiate(&self, accepted: &Accepted) -> &Variant {
        let candidates = [
            (self.br.as_ref(), accepted.br),
            (self.gzip.as_ref(), accepted.gzip),
            (Some(&self.identity), accepted.identity),
        ];
        let mut best: Option<(&Variant, u16)> = None;
        for (variant, q) in candidates {
            if let Some(variant) = variant {
                if q > 0 && best.is_none_or(|(_, top)| q > top) {
                    best = Some((variant, q));
                }
            }
        }
        best.map_or(&self.identity, |(v, _)| v)
    }
}

/// Every value of the request's header fields named `name`: a list-valued field may come in
/// several lines (RFC 9110 §5.3).
fn header_values<'r>(req: &Request<'r>, name: &'static str) -> impl Iterator<Item = &'r [u8]> {
    req.headers()
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// What `Accept-Encoding` says of the codings there are variants for, as q-values in
/// thousandths (0: not acceptable).
#[derive(Debug, PartialEq, Eq)]
struct Accepted {
    br: u16,
    gzip: u16,
    identity: u16,
}

impl Accepted {
    /// RFC 9110 §12.5.3: a coding not listed takes `*`'s q-value, else is not acceptable;
    /// identity is acceptable unless refused by name, or by `*;q=0` without its own entry.
    /// Identity acceptable only by default ranks below any listed coding (q 0.001): a
    /// browser's `gzip;q=0.8, br;q=0.9` asks for br, not for the file as it is.
    /// Without the field at all, the file as it is: a client that says nothing may not
    /// decode anything. An element whose q-value does not parse is ignored.
    fn parse<'v>(values: impl Iterator<Item = &'v [u8]>) -> Accepted {
        let (mut br, mut gzip, mut identity, mut star) = (None, None, None, None);
        let mut present = false;
        for value in values {
            present = true;
            for element in value.split(|&b| b == b',') {
                let mut parts = element.split(|&b| b == b';');
                let coding = trim(parts.next().unwrap_or_default());
                let mut q = Some(1000);
                for param in parts {
                    let param = trim(param);
                    if param.len() >= 2 && param[..2].eq_ignore_ascii_case(b"q=") {
                        q = qvalue(&param[2..]);
                    }
                }
                let Some(q) = q else { continue };
                let slot = if coding.eq_ignore_ascii_case(b"br") {
                    &mut br
                } else if coding.eq_ignore_ascii_case(b"gzip")
                    || coding.eq_ignore_ascii_case(b"x-gzip")
                {
                    &mut gzip
                } else if coding.eq_ignore_ascii_case(b"identity") {
                    &mut identity
                } else if coding == b"*" {
                    &mut star
                } else {
                    continue;
                };
                *slot = Some(q);
            }
        }
        if !present {
            return Accepted {
                br: 0,
                gzip: 0,
                identity: 1000,
            };
        }
        Accepted {
            br: br.or(star).unwrap_or(0),
            gzip: gzip.or(star).unwrap_or(0),
            identity: identity.or(star).unwrap_or(1),
        }
    }
}

/// A q-value (RFC 9110 §12.4.2: `0` to `1` with at most three decimals) in thousandths.
fn qvalue(text: &[u8]) -> Option<u16> {
    let (int, frac) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &b""[..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int[0] {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether `If-None-Match` matches `etag` (quoted) by the weak comparison RFC 9110 §13.1.2
/// requires: `*`, or a listed tag with the same opaque part, `W/` or not. A malformed list
/// matches nothing from where it goes wrong, so the file is sent.
fn none_match<'v>(values: impl Iterator<Item = &'v [u8]>, etag: &str) -> bool {
    for value in values {
        let mut rest = trim(value);
        if rest == b"*" {
            return true;
        }
        loop {
            while let [b' ' | b'\t' | b',', tail @ ..] = rest {
                rest = tail;
            }
            if rest.is_empty() {
                break;
            }
            if let Some(tail) = rest.strip_prefix(b"W/") {
                rest = tail;
            }
            let Some(end) = (rest.first() == Some(&b'"'))
                .then(|| rest[1..].iter().position(|&b| b == b'"'))
                .flatten()
            else {
                break;
            };
            let (tag, tail) = rest.split_at(end + 2);
            if tag == etag.as_bytes() {
                return true;
            }
            rest = tail;
        }
    }
    false
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Whether a name lies in a versioned directory, `vendor/<package>-<version>/`, whose
/// contents never change (the vendoring script writes a new directory per version).
fn is_versioned(name: &str) -> bool {
    let Some((dir, file)) = name
        .strip_prefix("vendor/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return false;
    };
    let Some((package, version)) = dir.rsplit_once('-') else {
        return false;
    };
    !package.is_empty()
        && !file.is_empty()
        && version.split('.').count() >= 2
        && version
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// Text compresses (to a quarter or less for these files); images and fonts are compressed
/// already.
fn is_compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("image/svg+xml")
}

fn brotli(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = brotli::CompressorWriter::new(
        Vec::with_capacity(bytes.len() / 4),
        64 * 1024,
        BROTLI_QUALITY,
        BROTLI_WINDOW,
    );
    out.write_all(bytes).ok()?;
    out.flush().ok()?;
    Some(out.into_inner())
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::best(),
    );
    out.write_all(bytes).ok()?;
    out.finish().ok()
}

fn walk(root: &Path, dir: &Path, depth: usize, files: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() && depth < MAX_DEPTH {
            walk(root, &path, depth + 1, files);
        } else if meta.is_file() && meta.len() <= MAX_FILE && files.len() < MAX_FILES {
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(name) = rel.to_str().map(|s| s.replace('\\', "/")) else {
                continue;
            };
            if let Ok(bytes) = std::fs::read(&path) {
                files.push((name, bytes));
            }
        }
    }
}

pub fn content_type(name: &str) -> &'static str {
    match name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .as_deref()
    {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/b.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("app.js.map"), "application/json");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    fn accepted(value: &str) -> Accepted {
        Accepted::parse(std::iter::once(value.as_bytes()))
    }

    #[test]
    fn accept_encoding_by_rfc_9110() {
        let a = |br, gzip, identity| Accepted { br, gzip, identity };
        for (value, want, why) in [
            ("", a(0, 0, 1), "an empty field: identity only"),
            (
                "gzip, br",
                a(1000, 1000, 1),
                "listed; identity by default, last",
            ),
            ("br;q=0, gzip;q=0.5", a(0, 500, 1), "q=0 refuses"),
            ("x-gzip;Q=0.25", a(0, 250, 1), "x-gzip is gzip; Q any case"),
            ("*;q=0.1, br", a(1000, 100, 100), "* covers the unlisted"),
            ("*;q=0", a(0, 0, 0), "* refuses identity too"),
            (
                "*;q=0, identity",
                a(0, 0, 1000),
                "unless identity is listed",
            ),
            (
                "br;q=2, gzip;q=0.1234, identity;q=x",
                a(0, 0, 1),
                "bad q-values ignored",
            ),
            (
                "br;q=1.000, gzip;q=0.",
                a(1000, 0, 1),
                "all the q-value forms",
            ),
            (
                " br ; q=0.9 ,,gzip",
                a(900, 1000, 1),
                "spaces and empty elements",
            ),
        ] {
            assert_eq!(accepted(value), want, "{value:?}: {why}");
        }
        assert_eq!(
            Accepted::parse(std::iter::empty()),
            a(0, 0, 1000),
            "no field: identity"
        );
        assert_eq!(
            Accepted::parse([&b"br;q=0"[..], b"gzip"].into_iter()),
            a(0, 1000, 1),
            "several lines make one list"
        );
    }

    #[test]
    fn the_variant_by_q_then_size() {
        let asset = Asset::new("a.js", "let x = 1;\n".repeat(100).into_bytes());
        let pick = |value: &str| asset.negotiate(&accepted(value)).encoding;
        assert_eq!(pick("gzip, br"), Some("br"));
        assert_eq!(pick("gzip;q=1, br;q=0.9"), Some("gzip"));
        assert_eq!(
            pick("gzip;q=0.8, br;q=0.9"),
            Some("br"),
            "not identity's default"
        );
        assert_eq!(pick("identity, gzip;q=0.5"), None);
        assert_eq!(pick("*;q=0"), None, "nothing acceptable: the file as it is");
        let tiny = Asset::new("a.js", b"1".to_vec());
        assert!(
            tiny.br.is_none() && tiny.gzip.is_none(),
            "no variant that is larger"
        );
        let png = Asset::new("a.png", vec![0; 1000]);
        assert!(
            png.br.is_none() && png.gzip.is_none(),
            "only text is compressed"
        );
    }

    #[test]
    fn if_none_match_by_weak_comparison() {
        let tag = "\"abc\"";
        let matches = |value: &str| none_match(std::iter::once(value.as_bytes()), tag);
        for (value, want) in [
            ("\"abc\"", true),
            ("W/\"abc\"", true),
            ("*", true),
            ("\"x\", \"abc\"", true),
            ("\"a,b\",W/\"abc\"", true),
            ("\"abcd\"", false),
            ("abc", false),
            ("\"x\" junk \"abc\"", false),
            ("\"abc", false),
            ("", false),
        ] {
            assert_eq!(matches(value), want, "{value:?}");
        }
    }

    #[test]
    fn versioned_directories_are_immutable() {
        for (name, want) in [
            ("vendor/swagger-ui-5.35.0/swagger-ui-bundle.js", true),
            ("vendor/redoc-2.5.4/redoc.standalone.js", true),
            ("vendor/swagger-ui/swagger-ui-bundle.js", false),
            ("vendor/README.md", false),
            ("vendor/x-1.2/", false),
            ("vendor/-1.2/a.js", false),
            ("vendor/x-1/a.js", false),
            ("app.js", false),
            ("x/vendor/y-1.2/a.js", false),
        ] {
            assert_eq!(is_versioned(name), want, "{name}");
        }
    }
}
