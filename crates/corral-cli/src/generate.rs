//! `corral generate`: the man pages, shell completions and the markdown
//! reference (docs/cli.md), generated from the clap definitions in
//! `args.rs` so that they never drift from the flags. Hidden from
//! `--help`: packagers call it (packaging/deb/build).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::args::{Cli, GenerateArgs, GenerateWhat};

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    match args.what {
        GenerateWhat::Man { dir } => write_man_pages(&dir),
        GenerateWhat::Completions { shell } => {
            // Into memory first: clap_complete panics on a failed write (a
            // closed pipe); this way it is an error like any other.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "corral", &mut script);
            std::io::stdout()
                .lock()
                .write_all(&script)
                .context("cannot write the completion script to stdout")
        }
        GenerateWhat::Reference => std::io::stdout()
            .lock()
            .write_all(crate::reference::markdown(Cli::command()).as_bytes())
            .context("cannot write the reference to stdout"),
    }
}

/// `corral.1` and one page per visible subcommand (`corral-run.1`, …).
fn write_man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the man page directory {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))
}
