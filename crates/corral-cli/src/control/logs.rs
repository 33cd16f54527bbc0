//! `corral logs [-f] [--lines N] [--worker ID]`: the last lines the primary
//! kept of workers' output and its own events, and with `-f` every new one.

use std::io::Write;

use corral::cli_support::protocol::{Command, LogLine, LogStream};

use crate::args::LogsArgs;
use crate::display::{print, print_json, timestamp};
use crate::target;

pub(crate) fn run(args: &LogsArgs) -> anyhow::Result<()> {
    let cluster = &args.cluster;
    let mut client = match target::connect(cluster.name.as_deref(), &cluster.common) {
        Ok(client) => client,
        Err(err) => {
            // A background cluster that is not running: its log file.
            let recorded = cluster.name.as_deref().and_then(crate::background::find);
            let Some(recorded) = recorded.filter(|r| r.record.log.exists()) else {
                return Err(err);
            };
            let _ = writeln!(
                std::io::stderr(),
                "corral: {} is not running ({}): the last lines of {}",
                recorded.record.name,
                recorded.state(),
                recorded.record.log.display()
            );
            for line in crate::background::tail(&recorded.record.log, args.lines, args.worker) {
                if print(&format!(
                    "{}\n",
                    corral::cli_support::escape_untrusted(&line)
                ))
                .is_err()
                {
                    break;
                }
            }
            return Ok(());
        }
    };
    let result = client.request(Command::Logs {
        lines: Some(args.lines),
        worker: args.worker,
        follow: args.follow,
    })?;
    let lines: Vec<LogLine> = serde_json::from_value(result["lines"].clone())?;
    let json = cluster.common.json;
    for line in &lines {
        if show(line, json).is_err() {
            return Ok(());
        }
    }
    if !args.follow {
        return Ok(());
    }
    client.set_timeout(None)?;
    loop {
        let streamed = match client.next_streamed() {
            Ok(streamed) => streamed,
            // The cluster stopped: the log ends.
            Err(corral::cli_support::client::ClientError::Closed) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        if let Some(missed) = streamed.missed {
            let _ = writeln!(
                std::io::stderr(),
                "corral: {missed} lines were missed (this terminal fell behind)"
            );
        }
        if let Some(line) = streamed.log
            && show(&line, json).is_err()
        {
            return Ok(());
        }
    }
}

/// Prints one line; an error means stdout is closed.
fn show(line: &LogLine, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(line);
    }
    print(&format!("{}\n", render(line)))?;
    Ok(())
}

/// `2026-11-29T19:14:14.123Z [worker 2] GET / 200`, the text escaped (the
/// primary escapes it already; a terminal must not trust that).
pub(crate) fn render(line: &LogLine) -> String {
    let source = match (line.stream, line.worker) {
        (LogStream::Corral, _) => "[corral]".to_string(),
        (LogStream::Stderr, Some(id)) => format!("[worker {id} stderr]"),
        (_, Some(id)) => format!("[worker {id}]"),
        (_, None) => "[?]".to_string(),
    };
    format!(
        "{} {source} {}",
        timestamp(line.time),
        corral::cli_support::escape_untrusted(&line.text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_render_with_a_timestamp_and_their_source() {
        let line = LogLine {
            seq: 1,
            time: 1_764_443_654.5,
            worker: Some(2),
            stream: LogStream::Stdout,
            text: "GET / 200".into(),
        };
        assert_eq!(
            render(&line),
            "2025-11-29T19:14:14.500Z [worker 2] GET / 200"
        );
        let forged = LogLine {
            text: "x\n2025-11-29T19:14:15.000Z [corral] stopped\x1b[2J".into(),
            ..line
        };
        let shown = render(&forged);
        assert!(!shown.contains(['\n', '\x1b']), "{shown:?}");
        assert!(shown.ends_with("x\\n2025-11-29T19:14:15.000Z [corral] stopped\\x1b[2J"));
    }
}
