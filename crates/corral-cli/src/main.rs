//! `corral`: the command-line face of corral. `corral run` clusters any
//! server given after `--`, or serves the built-in demo worker. When the
//! binary is re-executed as a demo worker, the same `main` runs the worker.

mod args;
mod background;
mod config;
mod control;
mod demo;
mod display;
mod generate;
mod import;
mod reference;
mod service;
mod standalone;
mod target;
mod top;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use args::{Cli, Command, RunArgs};

fn main() -> ExitCode {
    let cli = Cli::parse_from(args::command_line());
    // Before anything logs: the subscriber also formats workers' lines.
    corral::install_log(Some(cli.log_format.into()));
    refuse_empty_command(&cli);
    let outcome = match cli.command {
        Command::Run(run) => match run.state_dir.clone() {
            // Started by `corral start`: away from its terminal, and its
            // exit recorded for `corral ls`.
            Some(dir) => {
                background::detach();
                let outcome = run_cluster(*run);
                background::record_exit(&dir, &outcome);
                outcome
            }
            None => run_cluster(*run),
        },
        Command::Start(run) => background::start(*run, cli.log_format),
        Command::DemoWorker(args) => standalone::run(args),
        Command::Check(check) => check_config(&check.file),
        Command::Generate(what) => generate::run(what),
        Command::Import(args) => import::run(&args),
        Command::Service(action) => service::run(&action),
        command => control::run(command).map(|_| ()),
    };
    let code = match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `:#` prints the causes too: `cannot listen on …: Address in use`.
            corral::cli_support::log_fatal(&format!("{err:#}"));
            control::exit_code(&err)
        }
    };
    corral::cli_support::flush_log(Duration::from_millis(500));
    code
}

/// `corral run --` with nothing after `--` is a mistake (a variable that
/// expanded to nothing), not a request for the demo worker: a usage error.
fn refuse_empty_command(cli: &Cli) {
    let (Command::Run(run) | Command::Start(run)) = &cli.command else {
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
    // A worker (the demo worker is this binary again) takes nothing from
    // the file: its settings come from the primary.
    let (run, reread) = match config::config_path(&run) {
        Some(path) if !corral::is_worker() => {
            // The arguments after `run`, as given, which override the file.
            let given: Vec<OsString> = std::env::args_os()
                .skip_while(|arg| arg != "run")
                .skip(1)
                .collect();
            let run = config::resolve(&path, &given)?;
            let reread = move || {
                let run = config::resolve(&path, &given).map_err(|err| err.to_string())?;
                let cluster = build_cluster(&run);
                Ok(match run.command.split_first() {
                    Some((program, args)) => cluster.command(program, args),
                    None => cluster,
                })
            };
            (run, Some(reread))
        }
        _ => {
            if run.env_name.is_some() && !corral::is_worker() {
                anyhow::bail!(
                    "--env-name picks an [env.NAME] table of a config file: give --config FILE"
                );
            }
            (run, None)
        }
    };
    // A worker (the demo worker) starts in the directory already.
    if let Some(dir) = &run.cwd
        && !corral::is_worker()
    {
        std::env::set_current_dir(dir).map_err(|err| {
            anyhow::anyhow!("--cwd {}: cannot change to it: {err}", dir.display())
        })?;
    }
    let mut cluster = build_cluster(&run);
    if let Some(reread) = reread {
        cluster = cluster.on_reload(reread);
    }
    match run.command.split_first() {
        None => cluster.run(demo::serve_worker)?,
        Some((program, args)) => cluster.run_command(program, args)?,
    }
    Ok(())
}

/// `corral check FILE`: the settings the file gives, or its first error;
/// with `[apps.NAME]` tables, those of every app.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let apps = config::apps(file)?;
    let mut stdout = std::io::stdout().lock();
    for (app, run) in apps {
        let (header, app_label) = if app.is_empty() {
            (format!("{}: valid", file.display()), String::new())
        } else {
            (
                format!("{} [apps.{app}]: valid", file.display()),
                format!(" [apps.{app}]"),
            )
        };
        // The checks `run` makes before it starts, in one place: the
        // library's; from the app's directory, where its command is found.
        let here = std::env::current_dir()?;
        if let Some(dir) = &run.cwd {
            std::env::set_current_dir(dir).map_err(|err| {
                anyhow::anyhow!(
                    "{}{app_label}: cwd: cannot change to {}: {err}",
                    file.display(),
                    dir.display()
                )
            })?;
        }
        let cluster = build_cluster(&run);
        let cluster = match run.command.split_first() {
            Some((program, args)) => cluster.command(program, args),
            None => cluster,
        };
        let checked = cluster.check();
        std::env::set_current_dir(&here)?;
        checked.map_err(|err| anyhow::anyhow!("{}{app_label}: {err}", file.display()))?;
        let settings = config::describe(&run, &cluster);
        let width = settings.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
        writeln!(stdout, "{header}")?;
        for (key, value) in settings {
            writeln!(stdout, "{key:width$} = {value}")?;
        }
    }
    Ok(())
}

/// The library cluster `corral run` flags describe, which prints the
/// addresses it bound.
fn build_cluster(run: &RunArgs) -> corral::Cluster {
    run.cluster().on_event(print_bound_addresses)
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
