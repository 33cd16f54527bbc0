//! `corral scale [NAME] N|+N|-N`: sets the number of workers.

use corral::cli_support::protocol::{Command, ScaleReply};

use crate::args::{ScaleArgs, ScaleCount};
use crate::display::{print, print_json};
use crate::target;

pub(crate) fn run(args: &ScaleArgs) -> anyhow::Result<()> {
    let (name, count) = args.parse().map_err(anyhow::Error::msg)?;
    let mut client = target::connect(name.as_deref(), &args.common)?;
    let command = match count {
        ScaleCount::Exactly(workers) => Command::Scale {
            workers: Some(workers),
            change: None,
        },
        ScaleCount::By(change) => Command::Scale {
            workers: None,
            change: Some(change),
        },
    };
    let reply: ScaleReply = serde_json::from_value(client.request(command)?)?;
    if args.common.json {
        return print_json(&reply);
    }
    print(&format!("workers: {}\n", reply.workers_desired))?;
    Ok(())
}
