//! Reading a `/metrics` endpoint: a scrape, one sample, and the real
//! `promtool check metrics`.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::http_get;

/// `GET /metrics` on 127.0.0.1:`port`; fails the test unless it is a 200.
pub fn scrape(port: u16) -> String {
    let response = http_get(port, "/metrics").expect("the endpoint answers");
    assert_eq!(response.status, 200, "{response:?}");
    response.body
}

/// The value of the sample line named exactly `series`, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// `promtool check metrics` on `text`; `None` when promtool is missing.
pub fn promtool(text: &str) -> Option<(bool, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(_) => return None,
    };
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("promtool reads");
    let output = child.wait_with_output().expect("promtool runs");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Some((output.status.success(), said))
}
