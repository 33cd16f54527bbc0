//! The name a cluster gets when `--name` is not given: the program's, told
//! apart the way pm2 names apps. `node app.js` is `app` (the script after
//! Node's own options, also those that take a value: `node -r ./trace.js
//! app.js` is `app`, not `trace`); a package manager's `npm start`, `yarn
//! dev` or `pnpm start` is the package's name in `./package.json`; a
//! launcher's `npx tsx app.ts`, `tsx app.ts` or `ts-node app.ts` is the
//! script it runs (`app`); anything else is the program's file name.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// Node's options that take their value as the next argument.
const NODE_OPTIONS_WITH_VALUE: &[&str] = &[
    "-r",
    "--require",
    "--import",
    "--loader",
    "--experimental-loader",
    "-C",
    "--conditions",
    "--input-type",
    "--title",
    "--env-file",
    "--redirect-warnings",
    "--report-dir",
    "--diagnostic-dir",
    "--cpu-prof-dir",
    "--heap-prof-dir",
];

/// Programs that run a package's script: the package names the cluster.
const PACKAGE_RUNNERS: &[&str] = &["npm", "yarn", "pnpm"];

/// Programs that run a script given after their own options.
const LAUNCHERS: &[&str] = &["npx", "tsx", "ts-node", "ts-node-esm", "bun", "deno"];

/// The cluster's name for `program args`; `package_name` reads the
/// `name` of `./package.json` (asked only for a package runner).
pub(crate) fn name_for(
    program: &OsStr,
    args: &[OsString],
    is_node: bool,
    package_name: impl FnOnce() -> Option<String>,
) -> String {
    let base = file_name(program);
    if PACKAGE_RUNNERS.contains(&base.as_str()) {
        return package_name().unwrap_or(base);
    }
    let script = if LAUNCHERS.contains(&base.as_str()) {
        launched_script(args)
    } else if is_node {
        node_script(args)
    } else {
        None
    };
    match script.and_then(|script| Path::new(script).file_stem()) {
        Some(stem) => stem.to_string_lossy().into_owned(),
        None => base,
    }
}

/// The script `node ARGS` runs: the first argument after Node's options,
/// skipping the values of those that take one. `None` for `node -e CODE`
/// or no script.
fn node_script(args: &[OsString]) -> Option<&OsStr> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "-e" || text == "--eval" || text == "-p" || text == "--print" {
            return None;
        }
        if text == "--" {
            return args.next().map(OsString::as_os_str);
        }
        if NODE_OPTIONS_WITH_VALUE.contains(&text.as_ref()) {
            args.next();
            continue;
        }
        if !text.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

/// The script a launcher runs: `npx tsx app.ts` and `tsx app.ts` run
/// `app.ts`; `npx serve` runs `serve`. The last argument that is not an
/// option and looks like a file (it has an extension), else the first
/// that is not an option.
fn launched_script(args: &[OsString]) -> Option<&OsStr> {
    let plain: Vec<&OsStr> = args
        .iter()
        .map(OsString::as_os_str)
        .filter(|arg| !arg.as_encoded_bytes().starts_with(b"-"))
        .collect();
    plain
        .iter()
        .find(|arg| Path::new(arg).extension().is_some())
        .or(plain.first())
        .copied()
}

fn file_name(program: &OsStr) -> String {
    Path::new(program)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "corral".into())
}

/// The `name` in `./package.json`, without a scope (`@acme/api` is `api`).
pub(crate) fn package_json_name() -> Option<String> {
    let json = super::launcher::package_json()?;
    let name = json.get("name")?.as_str()?;
    let name = name.rsplit('/').next().unwrap_or(name);
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(program: &str, args: &[&str], is_node: bool) -> String {
        let args: Vec<OsString> = args.iter().map(Into::into).collect();
        name_for(program.as_ref(), &args, is_node, || Some("shop".into()))
    }

    #[test]
    fn node_is_named_after_its_script_past_its_own_options() {
        assert_eq!(name("node", &["/srv/app.js"], true), "app");
        assert_eq!(name("node", &["--inspect", "server.mjs"], true), "server");
        assert_eq!(name("node", &["-r", "./noop.js", "app.js"], true), "app");
        assert_eq!(name("node", &["--import", "tsx", "app.ts"], true), "app");
        assert_eq!(
            name("/usr/bin/node", &["--require=./a.js", "main.js"], true),
            "main"
        );
        assert_eq!(name("node", &["-e", "1"], true), "node");
        assert_eq!(name("node", &[], true), "node");
    }

    #[test]
    fn package_runners_are_named_after_the_package() {
        assert_eq!(name("npm", &["start"], true), "shop");
        assert_eq!(name("/usr/bin/yarn", &["dev"], true), "shop");
        assert_eq!(name("pnpm", &["run", "serve"], false), "shop");
        let args: Vec<OsString> = vec!["start".into()];
        assert_eq!(name_for("npm".as_ref(), &args, true, || None), "npm");
    }

    #[test]
    fn launchers_are_named_after_the_script_they_run() {
        assert_eq!(name("npx", &["tsx", "app.ts"], true), "app");
        assert_eq!(name("tsx", &["watch", "src/server.ts"], true), "server");
        assert_eq!(name("npx", &["--yes", "serve"], true), "serve");
        assert_eq!(name("./node_modules/.bin/tsx", &["app.ts"], true), "app");
    }

    #[test]
    fn other_programs_keep_their_file_name() {
        assert_eq!(name("python3", &["app.py"], false), "python3");
        assert_eq!(
            name("/usr/local/bin/gunicorn", &["app:app"], false),
            "gunicorn"
        );
    }
}
