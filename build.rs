//! Build script: the git commit for `pecgate_build_info`.
//!
//! Emitted as `BUILD_GIT_COMMIT`, outside the `PECGATE_` prefix: cargo run
//! and cargo test export build-script variables to the process, where
//! `PECGATE_*` variables are configuration overrides. `PECGATE_GIT_COMMIT`
//! set at build time wins (release pipelines building from a tarball set
//! it). Otherwise, in a git checkout with `git` on the
//! PATH, the short hash of HEAD; otherwise "unknown". Cargo re-runs this
//! script when HEAD moves (a checkout or a commit), so the label stays true
//! without a `cargo clean`.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PECGATE_GIT_COMMIT");
    if let Some(c) = std::env::var("PECGATE_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty()) {
        println!("cargo:rustc-env=BUILD_GIT_COMMIT={}", c.trim());
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    // `.git` is a directory in a clone and a file in a worktree; either way
    // git itself resolves where HEAD and the branch ref live.
    let commit = if manifest.join(".git").exists() {
        if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", manifest.join(head).display());
        }
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            if let Some(p) = git(&["rev-parse", "--git-path", &r]) {
                let p = manifest.join(p);
                // A packed ref has no file of its own until the next commit
                // on the branch creates it: then watch its directory (a
                // missing path would make cargo re-run on every build).
                let watch = if p.exists() { Some(p.as_path()) } else { p.parent().filter(|d| d.exists()) };
                if let Some(w) = watch {
                    println!("cargo:rerun-if-changed={}", w.display());
                }
            }
            if let Some(p) = git(&["rev-parse", "--git-path", "packed-refs"]) {
                let p = manifest.join(p);
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
        git(&["rev-parse", "--short", "HEAD"])
    } else {
        None
    };
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}
