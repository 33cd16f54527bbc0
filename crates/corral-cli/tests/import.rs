//! `corral import`: a real-looking pm2 ecosystem file, CommonJS and ESM,
//! evaluated by node, becomes a corral.toml that `corral check` accepts and
//! whose app `corral run --config FILE --app NAME` serves (from its own
//! directory, pm2's `cwd`).

use std::path::PathBuf;
use std::process::{Command, Output};

use corral_testkit::{
    ClusterProcess, Mark, PATIENCE, corral_path, free_port, http_get, node_available, wait_ready,
    wait_until,
};

/// The app pm2 would run: a plain Node server on $PORT.
const SERVER: &str = "const http = require('http');\n\
    http.createServer((req, res) => {\n\
      res.end(`api ${process.env.NODE_ENV} worker ${process.env.CORRAL_WORKER_ID}\\n`);\n\
    }).listen(process.env.PORT);\n";

/// The apps as an ecosystem file writes them; `EXPORT` is how it exports.
const APPS: &str = "{
  apps: [
    {
      name: 'api',
      script: './server.js',
      cwd: 'api',
      instances: 2,
      exec_mode: 'cluster',
      max_memory_restart: '300M',
      kill_timeout: 3000,
      listen_timeout: 8000,
      watch: false,
      env: { NODE_ENV: 'development', PORT: process.env.TEST_PORT },
      env_production: { NODE_ENV: 'production' },
      out_file: './logs/api.out.log',
    },
    {
      name: 'jobs',
      script: 'jobs.js',
      node_args: '--max-old-space-size=128',
      cron_restart: '0 3 * * *',
      autorestart: true,
      env: { QUEUE: 'default' },
    },
  ],
}";

/// A directory with the app and its ecosystem file, removed at the end.
struct Project {
    dir: PathBuf,
}

impl Project {
    fn new(name: &str, ecosystem_file: &str, ecosystem: &str) -> Project {
        let dir = std::env::temp_dir().join(format!("corral-import-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        std::fs::create_dir_all(dir.join("api")).expect("api/");
        std::fs::write(dir.join("api/server.js"), SERVER).expect("server.js");
        std::fs::write(dir.join("jobs.js"), "setInterval(() => {}, 1000);\n").expect("jobs.js");
        std::fs::write(dir.join(ecosystem_file), ecosystem).expect("the ecosystem file");
        Project { dir }
    }

    fn corral(&self, args: &[&str], port: u16) -> Output {
        Command::new(corral_path())
            .args(args)
            .current_dir(&self.dir)
            .env("TEST_PORT", port.to_string())
            .output()
            .expect("corral runs")
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Imports `ecosystem_file`, checks the result and serves its api app.
fn imports_and_serves(name: &str, ecosystem_file: &str, ecosystem: &str) {
    if !node_available() {
        return;
    }
    let project = Project::new(name, ecosystem_file, ecosystem);
    let port = free_port();
    let import = project.corral(&["import", ecosystem_file, "-o", "corral.toml"], port);
    let stderr = text(&import.stderr);
    assert!(import.status.success(), "{stderr}");
    for note in [
        "api: out_file: no counterpart in corral yet",
        "wrote corral.toml (2 apps)",
    ] {
        assert!(stderr.contains(note), "{note:?} in\n{stderr}");
    }
    assert!(
        !stderr.contains("watch"),
        "watch: false is no note: {stderr}"
    );
    let toml = std::fs::read_to_string(project.path("corral.toml")).expect("corral.toml");
    for line in [
        "[apps.api]\ncommand = \"node\"\nargs = [\"./server.js\"]\n",
        &format!("cwd = \"{}\"\n", project.path("api").display()),
        "workers = 2\n",
        "max-memory = \"300M\"\n",
        "grace = 3\n",
        "ready-timeout = 8\n",
        &format!("[apps.api.env]\nNODE_ENV = \"development\"\nPORT = \"{port}\"\n"),
        "[apps.jobs]\ncommand = \"node\"\nargs = [\"--max-old-space-size=128\", \"jobs.js\"]\n",
        "[apps.api.env.production]\nNODE_ENV = \"production\"\n",
        "reload-at = \"0 3 * * *\"\n",
    ] {
        assert!(toml.contains(line), "{line:?} in\n{toml}");
    }

    // A second import does not overwrite the first without --force.
    let again = project.corral(&["import", ecosystem_file, "-o", "corral.toml"], port);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );

    let check = project.corral(&["check", "corral.toml"], port);
    let stdout = text(&check.stdout);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        stdout.contains("corral.toml [apps.api]: valid")
            && stdout.contains("corral.toml [apps.jobs]: valid"),
        "{stdout}"
    );

    let mut command = Command::new(corral_path());
    command
        .args(["run", "--config", "corral.toml", "--app", "api"])
        .current_dir(&project.dir);
    let mut cluster = ClusterProcess::spawn(command);
    wait_ready(&cluster, Mark::START, 2);
    let served = wait_until(PATIENCE, || {
        http_get(port, "/")
            .is_ok_and(|response| response.body.starts_with("api development worker "))
    });
    assert!(
        served,
        "the api app serves on {port}:\n{}",
        cluster.output()
    );
    cluster.stop_gracefully(PATIENCE);
}

#[test]
fn a_commonjs_ecosystem_file_imports_and_runs() {
    imports_and_serves(
        "cjs",
        "ecosystem.config.js",
        &format!("// pm2's ecosystem file\nmodule.exports = {APPS};\n"),
    );
}

#[test]
fn an_esm_ecosystem_file_imports_and_runs() {
    imports_and_serves(
        "esm",
        "ecosystem.config.mjs",
        &format!("const config = {APPS};\nexport default config;\n"),
    );
}

#[test]
fn a_file_node_cannot_read_is_one_clear_error() {
    if !node_available() {
        return;
    }
    let project = Project::new(
        "broken",
        "ecosystem.config.js",
        "module.exports = {apps: [\n",
    );
    let output = project.corral(&["import", "ecosystem.config.js"], 0);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("ecosystem.config.js: node cannot read it: ")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
    std::fs::write(project.path("ecosystem.config.json"), "{\"apps\": 3}").unwrap();
    let output = project.corral(&["import", "ecosystem.config.json"], 0);
    assert!(
        text(&output.stderr).contains("it has no apps"),
        "{}",
        text(&output.stderr)
    );
    let output = project.corral(&["import", "ecosystem.yaml"], 0);
    assert!(text(&output.stderr).contains("ends in .js, .cjs, .mjs or .json"));
}
