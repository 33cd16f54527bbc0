//! `corral reload`: a rolling reload; waits for the reload that includes
//! this request and exits 1 with the reason when it aborted.

use anyhow::Context;
use corral::cli_support::client::ClientError;
use corral::cli_support::protocol::{Command, ReloadReply};

use crate::args::ReloadArgs;
use crate::display::{print, print_json};
use crate::target;

pub(crate) fn run(args: &ReloadArgs) -> anyhow::Result<()> {
    let cluster = &args.cluster;
    let mut client = target::connect(cluster.name.as_deref(), &cluster.common)?;
    // A reload takes as long as the workers take to start and drain.
    client.set_timeout(None)?;
    let wait = !args.no_wait;
    match client.request(Command::Reload { wait }) {
        Ok(result) => {
            let reply: ReloadReply =
                serde_json::from_value(result).context("unexpected answer to reload")?;
            if cluster.common.json {
                return print_json(&reply);
            }
            let text = match (&reply.outcome, reply.started) {
                (Some(outcome), _) => {
                    let mut line = format!(
                        "reload completed: {} workers replaced in {:.1}s",
                        outcome.replaced, outcome.duration_seconds
                    );
                    if let Some(still) = outcome.draining.describe() {
                        line.push_str(&format!("; {still}"));
                    }
                    line + "\n"
                }
                (None, true) => "reload started\n".to_string(),
                (None, false) => "reload queued: it follows the reload under way\n".to_string(),
            };
            print(&text)?;
            Ok(())
        }
        Err(ClientError::Refused { message, result }) => {
            if cluster.common.json
                && let Some(result) = result
            {
                print_json(&result)?;
            }
            Err(anyhow::anyhow!(message))
        }
        Err(err) => Err(err.into()),
    }
}
