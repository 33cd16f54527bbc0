//! Stamps the commit corral is built from into `corral --version`, as the
//! `CORRAL_COMMIT` compile-time variable. In order of preference:
//!
//! 1. `CORRAL_BUILD_COMMIT` from the environment: a package build that knows
//!    better (or builds from an exported tree) says so explicitly;
//! 2. the `.cargo_vcs_info.json` that `cargo package` writes into a crate:
//!    `cargo install corral-cli` from crates.io has no git checkout;
//! 3. `git rev-parse --short=12 HEAD` in a checkout;
//! 4. `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CORRAL_BUILD_COMMIT");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let commit = explicit_commit()
        .or_else(|| packaged_commit(&manifest_dir))
        .or_else(|| checkout_commit(&manifest_dir))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CORRAL_COMMIT={commit}");
}

fn explicit_commit() -> Option<String> {
    let commit = std::env::var("CORRAL_BUILD_COMMIT").ok()?;
    let commit = commit.trim();
    if commit.is_empty() {
        return None;
    }
    if !commit.chars().all(|c| c.is_ascii_graphic()) {
        println!(
            "cargo:warning=CORRAL_BUILD_COMMIT must be a commit id (printable, no spaces); ignored"
        );
        return None;
    }
    Some(commit.to_owned())
}

/// The commit `cargo package` recorded: `{"git": {"sha1": "…"}, …}`. Read by
/// hand, the file is cargo's and the one field is all we need.
fn packaged_commit(manifest_dir: &Path) -> Option<String> {
    let info = manifest_dir.join(".cargo_vcs_info.json");
    println!("cargo:rerun-if-changed={}", info.display());
    let text = std::fs::read_to_string(info).ok()?;
    let after_key = text.split_once("\"sha1\"")?.1;
    let value = after_key.split('"').nth(1)?;
    short_hex(value)
}

fn checkout_commit(manifest_dir: &Path) -> Option<String> {
    let commit = git(manifest_dir, &["rev-parse", "--short=12", "HEAD"])?;
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it points
    // to (a commit) and packed-refs (a gc).
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(manifest_dir, &["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(manifest_dir, &["rev-parse", "--git-path", &name]) {
            println!(
                "cargo:rerun-if-changed={}",
                manifest_dir.join(path).display()
            );
        }
    }
    short_hex(&commit)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}

/// A commit id as printed: its first 12 hexadecimal digits, as
/// `git rev-parse --short=12` (anything else is not a commit id).
fn short_hex(id: &str) -> Option<String> {
    let short: String = id.chars().take(12).collect();
    (short.len() >= 7 && short.chars().all(|c| c.is_ascii_hexdigit())).then_some(short)
}
