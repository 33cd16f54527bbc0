//! `corral --version` names the version and the commit the binary was built
//! from, so a bug report from an installed binary says what it runs.

use std::process::Command;

use corral_testkit::corral_path;

#[test]
fn version_names_the_commit_of_the_checkout() {
    let out = Command::new(corral_path())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let prefix = format!("corral {} (", env!("CARGO_PKG_VERSION"));
    let commit = line
        .trim_end()
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`corral --version` said {line:?}"));
    let expected = match option_env!("CORRAL_BUILD_COMMIT") {
        Some(given) if !given.is_empty() => given.to_owned(),
        _ => head_commit().unwrap_or_else(|| "unknown".to_owned()),
    };
    assert_eq!(commit, expected, "{line}");
}

/// `git rev-parse --short=12 HEAD` where the tests are, if this is a checkout.
fn head_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
