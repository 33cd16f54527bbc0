//! `corral`: the command-line face of corral. `corral run` clusters any
//! server given after `--`, or serves the built-in demo worker. When the
//! binary is re-executed as a demo worker, the same `main` runs the worker.

mod args;
mod demo;
mod standalone;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use args::{Cli, Command, OnMessage, RunArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before anything logs: the subscriber also formats workers' lines.
    corral::log::install(Some(cli.log_format.into()));
    refuse_empty_command(&cli);
    let outcome = match cli.command {
        Command::Run(run) => run_cluster(*run),
        Command::DemoWorker(args) => standalone::run(args),
    };
    let code = match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `:#` prints the causes too: `cannot listen on …: Address in use`.
            corral::log::fatal(&format!("{err:#}"));
            ExitCode::FAILURE
        }
    };
    corral::log::flush(Duration::from_millis(500));
    code
}

/// `corral run --` with nothing after `--` is a mistake (a variable that
/// expanded to nothing), not a request for the demo worker: a usage error.
fn refuse_empty_command(cli: &Cli) {
    let Command::Run(run) = &cli.command else {
        return;
    };
    if run.command.is_empty() && std::env::args_os().any(|arg| arg == "--") {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let usage = cli.find_subcommand_mut("run").cloned().unwrap_or(cli);
        usage
            .bin_name("corral run")
            .error(
                clap::error::ErrorKind::InvalidValue,
                "no command after `--`: give the program each worker runs \
                 (`corral run -- ./server`), or leave out `--` to serve the demo worker",
            )
            .exit();
    }
}

fn run_cluster(run: RunArgs) -> anyhow::Result<()> {
    let mut cluster = corral::Cluster::new()
        .policy(run.policy.into())
        .grace(run.grace)
        .backlog(run.backlog)
        .ready_timeout(run.ready_timeout)
        .ready(run.ready)
        .node(run.node)
        .max_surge(run.max_surge as usize)
        .stable_after(run.stable_after)
        .max_restart_delay(run.max_restart_delay)
        .max_message_size(run.max_message_size as usize)
        .on_message(corral::MessagePolicy {
            log: true,
            rebroadcast: run.on_message == OnMessage::Broadcast,
        })
        .on_event(print_bound_addresses)
        // `corral run` inside another cluster's worker is a cluster of its own.
        .allow_nested(true);
    if let Some(workers) = run.workers {
        cluster = cluster.workers(workers as usize);
    }
    if let Some(max) = run.max_requests {
        cluster = cluster.max_requests(max, run.max_requests_jitter);
    }
    if let Some(bytes) = run.max_memory {
        cluster = cluster.max_memory(bytes);
    }
    if let Some(timeout) = run.timeout {
        cluster = cluster.watchdog(timeout);
    }
    if let Some(user) = run.user {
        cluster = cluster.user(user);
    }
    if let Some(threads) = run.worker_threads {
        cluster = cluster.worker_threads(threads as usize);
    }
    // Started by systemd with sockets and no --listen: the library serves
    // every socket it was given. A Node program's listen() calls are served
    // on demand: nothing is bound up front unless asked.
    let node = run
        .command
        .first()
        .is_some_and(|program| run.node.applies_to(program));
    let addresses = if run.listen.is_empty() && !corral::activated_addresses().is_empty() {
        Vec::new()
    } else if run.listen.is_empty() && !node {
        vec!["127.0.0.1:8000".to_string()]
    } else {
        run.listen
    };
    for address in addresses {
        cluster = cluster.listen(address);
    }
    match run.command.split_first() {
        None => {
            cluster = cluster.name(run.name.unwrap_or_else(|| "demo".into()));
            cluster.run(demo::serve_worker)?;
        }
        Some((program, args)) => {
            if let Some(name) = run.name {
                cluster = cluster.name(name);
            }
            cluster.run_command(program, args)?;
        }
    }
    Ok(())
}

/// Prints `listening on ADDR`, one line per address, on stdout: the stable
/// line that scripts read to learn a port chosen with port 0.
fn print_bound_addresses(event: &corral::Event) {
    if let corral::Event::Bound { addresses } = event {
        let mut stdout = std::io::stdout().lock();
        for address in addresses {
            let _ = writeln!(stdout, "listening on {address}");
        }
        let _ = stdout.flush();
    }
}
