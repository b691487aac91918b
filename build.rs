//! Records the commit the binaries were built from, for `--version`.
//!
//! `LOGHAMSTER_COMMIT` is the short hash of `HEAD`, or `unknown` outside a
//! git checkout (a crate tarball, `cargo install` from a copy). It names
//! the commit, not uncommitted changes on top of it: the script reruns
//! only when `HEAD` moves, not on every edit.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    let text = commit.unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=LOGHAMSTER_COMMIT={text}");
    // Rebuild the version when HEAD moves (a commit, a checkout).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = PathBuf::from(dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                let common = PathBuf::from(common);
                println!("cargo:rerun-if-changed={}", common.join(&r).display());
                println!(
                    "cargo:rerun-if-changed={}",
                    common.join("packed-refs").display()
                );
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
