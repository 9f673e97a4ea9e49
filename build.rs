//! Stamps the build with its source revision, for `records_service_build_info{revision}`:
//! `RECORDS_REVISION` when set (a container build, where there is no `.git`), else
//! `git rev-parse --short=12 HEAD`, else nothing (the metric then says `unknown`).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RECORDS_REVISION");
    let from_env = std::env::var("RECORDS_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty());
    let revision = from_env.or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|r| !r.is_empty())
    });
    if let Some(revision) = revision {
        println!("cargo:rustc-env=RECORDS_REVISION={revision}");
    }
    // A new commit changes HEAD's branch file (or HEAD itself, detached).
    let head = Path::new(".git/HEAD");
    if head.exists() {
        println!("cargo:rerun-if-changed=.git/HEAD");
        if let Ok(text) = std::fs::read_to_string(head) {
            if let Some(branch) = text.trim().strip_prefix("ref: ") {
                println!("cargo:rerun-if-changed=.git/{branch}");
            }
        }
    }
}
