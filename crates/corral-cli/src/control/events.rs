//! `corral events`: the cluster's lifecycle events as JSON lines, live,
//! until the cluster stops (or the reader goes away).

use std::io::Write;

use corral::cli_support::client::ClientError;
use corral::cli_support::protocol::Command;

use crate::args::ClusterArgs;
use crate::display::print_json;
use crate::target;

pub(crate) fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    let mut client = target::connect(args.name.as_deref(), &args.common)?;
    client.request(Command::Events)?;
    client.set_timeout(None)?;
    loop {
        let streamed = match client.next_streamed() {
            Ok(streamed) => streamed,
            Err(ClientError::Closed) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        if let Some(missed) = streamed.missed {
            let _ = writeln!(
                std::io::stderr(),
                "corral: {missed} events were missed (this reader fell behind)"
            );
        }
        if let Some(event) = streamed.event
            && print_json(&event).is_err()
        {
            return Ok(());
        }
    }
}
