//! Static files: `static/` read once at start into memory, served by exact name. A request can
//! only name a file that was found at start, so no path (`..`, encoded slashes, symlinks added
//! later) reaches outside the directory.

use std::collections::HashMap;
use std::path::Path;

/// Files larger than this are skipped (the console is a few KiB).
const MAX_FILE: u64 = 4 << 20;
const MAX_FILES: usize = 1000;
const MAX_DEPTH: usize = 8;

pub struct Assets {
    files: HashMap<String, (&'static str, Vec<u8>)>,
}

impl Assets {
    /// Loads every regular file under `dir` (not following symlinks). A missing directory
    /// gives an empty set and a warning.
    pub fn load(dir: &str) -> Assets {
        let mut files = HashMap::new();
        let root = Path::new(dir);
        if !root.is_dir() {
            tracing::warn!(
                event = "static_dir_missing",
                dir,
                "not a directory; / and /static/ will answer 404"
            );
        }
        walk(root, root, 0, &mut files);
        Assets { files }
    }

    /// The file at `name` (relative to the directory, `/`-separated).
    pub fn get(&self, name: &str) -> Option<(&'static str, &[u8])> {
        self.files.get(name).map(|(t, b)| (*t, b.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    files: &mut HashMap<String, (&'static str, Vec<u8>)>,
) {
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
                files.insert(name.clone(), (content_type(&name), bytes));
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
        Some("json") => "application/json",
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
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
