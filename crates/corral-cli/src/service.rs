//! `corral service install NAME [run's flags] -- CMD…`: start on boot
//! without a daemon of corral's own. It writes a systemd service unit
//! (and, with `--socket`, a socket unit holding the listening ports) whose
//! `ExecStart=` is this `corral run`, with every path resolved now: the
//! corral binary, the program through PATH (node from nvm included), the
//! working directory and the configuration file. Then `systemctl
//! daemon-reload` and `enable --now`. `corral service remove NAME` undoes
//! it. `--dry-run` prints the units instead.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::CommandFactory;
use clap::parser::ValueSource;

use crate::args::{Cli, RunArgs, ServiceAction, ServiceInstallArgs, ServiceRemoveArgs};

/// The PATH systemd gives a service, after the program's own directory.
const SYSTEMD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The arguments of `service install` that are its own, not `run`'s.
const OWN: &[&str] = &[
    "service",
    "user_unit",
    "socket",
    "dry_run",
    "no_enable",
    "config",
    "app",
    "command",
    "help",
    "log_format",
];

pub fn run(action: &ServiceAction) -> anyhow::Result<()> {
    match action {
        ServiceAction::Install(args) => install(args),
        ServiceAction::Remove(args) => remove(args),
    }
}

/// A unit file to write: its file name and text.
#[derive(Debug)]
pub struct Unit {
    pub file: String,
    pub text: String,
}

fn install(args: &ServiceInstallArgs) -> anyhow::Result<()> {
    let given = given_run_flags()?;
    let units = units(args, &given)?;
    let dir = unit_dir(args.user_unit)?;
    if args.dry_run {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        for unit in &units {
            writeln!(stdout, "# file: {}", dir.join(&unit.file).display())?;
            writeln!(stdout, "{}", unit.text)?;
        }
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for unit in &units {
        let path = dir.join(&unit.file);
        std::fs::write(&path, &unit.text).map_err(|err| {
            let hint = if err.kind() == std::io::ErrorKind::PermissionDenied {
                ": a system unit needs root (sudo), or install a user unit with --user-unit"
            } else {
                ""
            };
            anyhow::anyhow!("cannot write {}: {err}{hint}", path.display())
        })?;
        println!("wrote {}", path.display());
    }
    // The socket first, so the service finds its socket when it starts.
    let mut names: Vec<&str> = units.iter().map(|unit| unit.file.as_str()).collect();
    names.sort_by_key(|name| !name.ends_with(".socket"));
    if args.no_enable {
        println!(
            "not enabled (--no-enable): systemctl{} daemon-reload && systemctl{} enable --now {}",
            scope(args.user_unit),
            scope(args.user_unit),
            names.join(" ")
        );
        return Ok(());
    }
    systemctl(args.user_unit, &["daemon-reload"])?;
    let mut enable = vec!["enable", "--now"];
    enable.extend(names.iter().copied());
    systemctl(args.user_unit, &enable)?;
    for unit in units.iter().filter(|unit| unit.file.ends_with(".service")) {
        let service = unit.file.trim_end_matches(".service");
        let scope = scope(args.user_unit);
        println!(
            "{service}: systemctl{scope} status {service} · journalctl{scope} -u {service} · \
             systemctl{scope} reload {service} (rolling)"
        );
    }
    Ok(())
}

fn remove(args: &ServiceRemoveArgs) -> anyhow::Result<()> {
    let dir = unit_dir(args.user_unit)?;
    let base = unit_name(&args.name);
    let files: Vec<PathBuf> = [".socket", ".service"]
        .iter()
        .map(|suffix| dir.join(format!("{base}{suffix}")))
        .filter(|path| path.exists())
        .collect();
    if files.is_empty() {
        bail!(
            "no unit {base}.service in {}: `ls {}` lists the units there{}",
            dir.display(),
            dir.display(),
            if args.user_unit {
                ""
            } else {
                " (a user unit: add --user-unit)"
            }
        );
    }
    let names: Vec<String> = files
        .iter()
        .filter_map(|path| path.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    let mut disable = vec!["disable", "--now"];
    disable.extend(names.iter().map(String::as_str));
    let systemd = systemd_runs();
    if !systemd {
        println!("systemd is not running here: removing the unit files only");
    }
    if !args.dry_run && systemd {
        systemctl(args.user_unit, &disable)?;
    }
    for file in &files {
        if args.dry_run {
            println!("would remove {}", file.display());
        } else {
            std::fs::remove_file(file)
                .with_context(|| format!("cannot remove {}", file.display()))?;
            println!("removed {}", file.display());
        }
    }
    if !args.dry_run && systemd {
        systemctl(args.user_unit, &["daemon-reload"])?;
    }
    Ok(())
}

/// ` --user` for user units, for the commands printed and run.
fn scope(user: bool) -> &'static str {
    if user { " --user" } else { "" }
}

/// Whether systemd is the init system here (as sd_booted(3) tells).
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").exists()
}

/// Runs `systemctl [--user] ARGS`, and says what it did.
fn systemctl(user: bool, args: &[&str]) -> anyhow::Result<()> {
    let shown = format!("systemctl{} {}", scope(user), args.join(" "));
    if !systemd_runs() {
        bail!(
            "systemd is not running here (no /run/systemd/system), so `{shown}` cannot run: \
             the unit files are written; run it where systemd runs, or use --no-enable"
        );
    }
    let mut command = Command::new("systemctl");
    if user {
        command.arg("--user");
    }
    let output = command
        .args(args)
        .output()
        .map_err(|err| anyhow::anyhow!("cannot run `{shown}`: {err}: is systemd installed?"))?;
    if !output.status.success() {
        let why = String::from_utf8_lossy(&output.stderr);
        bail!("`{shown}` failed: {}", why.trim());
    }
    println!("ran {shown}");
    Ok(())
}

/// Where units go: /etc/systemd/system, or the user's
/// $XDG_CONFIG_HOME/systemd/user (~/.config/systemd/user).
fn unit_dir(user: bool) -> anyhow::Result<PathBuf> {
    if !user {
        return Ok(PathBuf::from("/etc/systemd/system"));
    }
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("neither XDG_CONFIG_HOME nor HOME is set: cannot find the user's units"),
        },
    };
    Ok(config.join("systemd").join("user"))
}

/// The unit name of cluster NAME: corral-NAME.
fn unit_name(name: &str) -> String {
    format!("corral-{name}")
}

/// The `run` flags given on the command line, as `--flag=value` each: the
/// ones `ExecStart=` passes on. The command line is parsed again, as clap
/// keeps where a value came from only in its matches.
fn given_run_flags() -> anyhow::Result<Vec<(String, OsString)>> {
    let cli = Cli::command();
    let matches = cli
        .clone()
        .try_get_matches_from(crate::args::command_line())?;
    let Some(("service", service)) = matches.subcommand() else {
        return Ok(Vec::new());
    };
    let Some(("install", install)) = service.subcommand() else {
        return Ok(Vec::new());
    };
    let definition = cli
        .find_subcommand("service")
        .and_then(|service| service.find_subcommand("install"))
        .expect("corral has service install");
    let mut flags = Vec::new();
    for arg in definition.get_arguments() {
        let id = arg.get_id().as_str();
        if OWN.contains(&id) || install.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        for value in install.get_raw(id).into_iter().flatten() {
            flags.push((long.to_string(), value.to_os_string()));
        }
    }
    Ok(flags)
}

/// The units `install` writes.
pub fn units(args: &ServiceInstallArgs, given: &[(String, OsString)]) -> anyhow::Result<Vec<Unit>> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let corral = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot find the corral binary's own path")?;
    let mut clusters: Vec<Cluster> = Vec::new();
    // `--name NAME` for the cluster, unless the flags give one.
    let name_flag = |name: &str| -> Vec<OsString> {
        match &args.run.name {
            Some(_) => Vec::new(),
            None => vec!["--name".into(), name.into()],
        }
    };
    match &args.run.config {
        Some(file) => {
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            let apps = crate::config::apps(&file)?;
            let has_apps = apps.iter().any(|(app, _)| !app.is_empty());
            if has_apps && (args.service.is_some() || args.run.name.is_some()) {
                bail!(
                    "{}: the file has [apps.NAME] tables, each installed as a unit named by its \
                     app: leave out NAME and --name (choose one app with --app NAME)",
                    file.display()
                );
            }
            for (app, run) in apps {
                if let Some(only) = &args.run.app
                    && only != &app
                {
                    continue;
                }
                let mut head: Vec<OsString> = vec!["--config".into(), file.clone().into()];
                let name = if app.is_empty() {
                    let name = args.service.clone().unwrap_or_else(|| resolved_name(&run));
                    head.extend(name_flag(&name));
                    name
                } else {
                    head.extend(["--app".into(), app.clone().into()]);
                    resolved_name(&run)
                };
                clusters.push(Cluster {
                    name,
                    head,
                    run,
                    command_given: !args.run.command.is_empty(),
                });
            }
        }
        None => {
            let Some(name) = &args.service else {
                bail!("give the service's NAME: corral service install NAME [flags] -- COMMAND");
            };
            if args.run.command.is_empty() {
                bail!(
                    "give the program after `--`: corral service install {name} -- node app.js \
                     (or --config FILE)"
                );
            }
            clusters.push(Cluster {
                name: name.clone(),
                head: name_flag(name),
                run: args.run.clone(),
                command_given: true,
            });
        }
    }
    let mut units = Vec::new();
    for cluster in &clusters {
        check_unit_name(&cluster.name)?;
        units.extend(cluster_units(args, cluster, given, &corral, &cwd)?);
    }
    Ok(units)
}

/// One cluster to install: its name, the flags that choose it (config,
/// app, name), its settings.
struct Cluster {
    name: String,
    head: Vec<OsString>,
    run: RunArgs,
    command_given: bool,
}

/// The cluster's name as `corral run` resolves it.
fn resolved_name(run: &RunArgs) -> String {
    run.cluster()
        .describe()
        .into_iter()
        .find(|(key, _)| key == "name")
        .map(|(_, name)| name)
        .unwrap_or_default()
}

fn check_unit_name(name: &str) -> anyhow::Result<()> {
    let fine = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !fine {
        bail!(
            "{name:?} cannot name a systemd unit: give a NAME of letters, digits, '-', '_' or '.'"
        );
    }
    Ok(())
}

fn cluster_units(
    args: &ServiceInstallArgs,
    cluster: &Cluster,
    given: &[(String, OsString)],
    corral: &Path,
    cwd: &Path,
) -> anyhow::Result<Vec<Unit>> {
    let unit = unit_name(&cluster.name);
    let run = &cluster.run;
    // The program as found now, through this shell's PATH.
    let app_dir = match &run.cwd {
        Some(dir) => cwd.join(dir),
        None => cwd.to_path_buf(),
    };
    let program = run
        .command
        .first()
        .map(|program| find_program(program, &app_dir))
        .transpose()?;
    let mut exec: Vec<OsString> = vec![corral.into(), "run".into()];
    exec.extend(cluster.head.iter().cloned());
    for (long, value) in given {
        if args.socket && long == "listen" {
            // The socket unit holds these; corral serves what it is given.
            continue;
        }
        let mut flag = OsString::from(format!("--{long}="));
        flag.push(value);
        exec.push(flag);
    }
    if cluster.command_given {
        exec.push("--".into());
        if let Some(program) = &program {
            exec.push(program.clone().into());
        }
        exec.extend(run.command.iter().skip(1).cloned());
    }
    let mut path = OsString::new();
    if let Some(dir) = program
        .as_deref()
        .and_then(Path::parent)
        .filter(|dir| !std::env::split_paths(SYSTEMD_PATH).any(|known| known == *dir))
    {
        path.push(dir);
        path.push(":");
    }
    path.push(SYSTEMD_PATH);
    let stop_timeout = run.grace.0.as_secs_f64().ceil() as u64 + 10;
    let socket_lines = if args.socket {
        let addresses = socket_addresses(&cluster.name, &run.listen)?;
        let listen: String = addresses
            .iter()
            .map(|address| format!("ListenStream={address}\n"))
            .collect();
        Some(listen)
    } else {
        None
    };
    let (requires, target) = match (&socket_lines, args.user_unit) {
        (Some(_), _) => (
            format!("Requires={unit}.socket\nAfter=network.target {unit}.socket\n"),
            if args.user_unit {
                "default.target"
            } else {
                "multi-user.target"
            },
        ),
        (None, true) => ("After=network.target\n".to_string(), "default.target"),
        (None, false) => ("After=network.target\n".to_string(), "multi-user.target"),
    };
    let service = format!(
        "# Written by `corral service install`: the cluster {name}, started on boot.\n\
         # Remove it with `corral service remove {name}{user_flag}`.\n\
         [Unit]\n\
         Description=corral cluster {name}\n\
         {requires}\n\
         [Service]\n\
         # READY=1 once every worker is ready; RELOADING=1 / READY=1 around a\n\
         # rolling reload; STOPPING=1; WATCHDOG=1 from the supervisor loop.\n\
         Type=notify\n\
         ExecStart={exec}\n\
         # A zero-downtime rolling reload.\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         WorkingDirectory={cwd}\n\
         Environment={path}\n\
         # Above --grace, so systemd never kills draining workers.\n\
         TimeoutStopSec={stop_timeout}\n\
         # SIGTERM to corral alone, which stops its workers in order.\n\
         KillMode=mixed\n\
         WatchdogSec=10\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         WantedBy={target}\n",
        name = cluster.name,
        user_flag = if args.user_unit { " --user-unit" } else { "" },
        exec = exec
            .iter()
            .map(|arg| exec_quote(arg))
            .collect::<Vec<_>>()
            .join(" "),
        // A path as is (WorkingDirectory= takes no quotes), `%` doubled.
        cwd = cwd.to_string_lossy().replace('%', "%%"),
        path = environment_quote(&format!("PATH={}", path.to_string_lossy())),
    );
    let mut units = vec![Unit {
        file: format!("{unit}.service"),
        text: service,
    }];
    if let Some(listen) = socket_lines {
        units.push(Unit {
            file: format!("{unit}.socket"),
            text: format!(
                "# Written by `corral service install --socket`: the listening sockets of\n\
                 # {unit}.service, held by systemd, so the port survives a restart of corral\n\
                 # itself: connections wait in its queue instead of being refused.\n\
                 [Unit]\n\
                 Description=corral cluster {name} socket\n\
                 \n\
                 [Socket]\n\
                 {listen}\
                 Backlog={backlog}\n\
                 \n\
                 [Install]\n\
                 WantedBy=sockets.target\n",
                name = cluster.name,
                backlog = run.backlog,
            ),
        });
    }
    Ok(units)
}

/// The addresses a socket unit holds: each `--listen`, resolved now, with
/// a fixed port.
fn socket_addresses(name: &str, listen: &[String]) -> anyhow::Result<Vec<String>> {
    if listen.is_empty() {
        bail!(
            "{name}: --socket needs the addresses the socket unit holds: add --listen ADDR \
             (as --listen 0.0.0.0:8000)"
        );
    }
    listen
        .iter()
        .map(|text| {
            if text.trim().starts_with("systemd:") {
                bail!("{name}: --listen {text} names a socket systemd passes: give HOST:PORT");
            }
            let address = text
                .parse::<corral::ListenAddr>()
                .and_then(|address| address.resolve())
                .map_err(|err| anyhow::anyhow!("{name}: --listen {text}: {err}"))?;
            if address.port() == 0 {
                bail!("{name}: --listen {text}: a socket unit needs a fixed port, not 0");
            }
            Ok(address.to_string())
        })
        .collect()
}

/// The program as a path: one with a `/` made absolute against `cwd`,
/// a bare name found through PATH now (as the shell would).
fn find_program(program: &OsStr, cwd: &Path) -> anyhow::Result<PathBuf> {
    let path = Path::new(program);
    if program.as_encoded_bytes().contains(&b'/') {
        let absolute = cwd.join(path);
        if !absolute.is_file() {
            bail!("{}: no such program", absolute.display());
        }
        return Ok(absolute);
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&search) {
        let candidate = dir.join(path);
        if is_executable(&candidate) {
            return Ok(std::path::absolute(&candidate).unwrap_or(candidate));
        }
    }
    bail!(
        "{}: not found on PATH: give its path (as /usr/bin/{})",
        path.display(),
        path.display()
    )
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// An `Environment=` assignment: double-quoted when it has spaces, with
/// `\` and `"` escaped and `%` doubled (`$` is not special there).
fn environment_quote(assignment: &str) -> String {
    let escaped = assignment.replace('%', "%%");
    if !escaped
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
    {
        return escaped;
    }
    let inner = escaped.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{inner}\"")
}

/// One `ExecStart=` word: as is when plain, else double-quoted with `\`
/// and `"` escaped; `%` (a specifier) and `$` (a variable) are doubled
/// either way.
fn exec_quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let escaped = text.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '\\' | ';'));
    if plain {
        return escaped;
    }
    let mut quoted = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_are_quoted_for_systemd() {
        let quote = |text: &str| exec_quote(OsStr::new(text));
        assert_eq!(quote("/usr/bin/node"), "/usr/bin/node");
        assert_eq!(quote("--env=A=b c"), "\"--env=A=b c\"");
        assert_eq!(quote("100%"), "100%%");
        assert_eq!(quote("$HOME"), "$$HOME");
        assert_eq!(quote("a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(quote(";"), "\";\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("--workers=2"), "--workers=2");
    }

    #[test]
    fn environment_values_are_quoted_only_when_needed() {
        assert_eq!(environment_quote("PATH=/a:/b"), "PATH=/a:/b");
        assert_eq!(environment_quote("PATH=/my dir:/b"), "\"PATH=/my dir:/b\"");
        assert_eq!(environment_quote("PATH=/$x/%"), "PATH=/$x/%%");
    }

    #[test]
    fn programs_are_found_through_path() {
        let found = find_program(OsStr::new("sh"), Path::new("/")).unwrap();
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
        let err = find_program(OsStr::new("no-such-program-x"), Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("not found on PATH"), "{err}");
        let err = find_program(OsStr::new("./nope"), Path::new("/")).unwrap_err();
        assert!(
            err.to_string().contains("/./nope: no such program"),
            "{err}"
        );
    }

    #[test]
    fn a_socket_needs_fixed_addresses() {
        assert_eq!(
            socket_addresses("api", &["127.0.0.1:8000".into()]).unwrap(),
            ["127.0.0.1:8000"]
        );
        assert!(
            socket_addresses("api", &[])
                .unwrap_err()
                .to_string()
                .contains("--listen ADDR")
        );
        assert!(
            socket_addresses("api", &["127.0.0.1:0".into()])
                .unwrap_err()
                .to_string()
                .contains("fixed port")
        );
    }
}
