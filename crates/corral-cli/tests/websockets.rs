//! WebSockets across reloads (docs/node.md, "WebSockets"): corral's Node
//! agent closes a draining worker's WebSockets with 1001 (going away), so
//! every client reconnects to a new worker and the old workers exit long
//! before `--grace`; `corral reload` and `corral status` say while old
//! workers still drain. With `ws` in both its shapes (attached to an
//! http.Server, and `noServer` with handleUpgrade), under reuseport and
//! round-robin, and with socket.io on its websocket transport.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use corral_testkit::{ClusterProcess, Mark, PATIENCE, corral_path, node_with, wait_until};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/node");
const NAME: &str = "websockets";
/// Far longer than any drain here: a worker still there when it ends
/// would have cut its clients (1006).
const GRACE: &str = "60";
const CLIENTS: usize = 6;

/// Node and the fixtures' `ws` and socket.io present, else a line saying
/// what to install.
fn have_node() -> bool {
    node_with(&["ws", "socket.io", "socket.io-client"])
}

/// `corral run -w 2` of the fixture `app`, both workers ready.
fn cluster(app: &str, policy: &str, extra: &[&str], env: &[(&str, &str)]) -> ClusterProcess {
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "2", "--name", NAME, "--grace", GRACE])
        .args(["--policy", policy])
        .args(extra)
        .arg("--")
        .arg("node")
        .arg(format!("{FIXTURES}/{app}"))
        .env("PORT", "0");
    for (name, value) in env {
        command.env(name, value);
    }
    let cluster = ClusterProcess::spawn(command);
    cluster.expect_event(Mark::START, "ready", Some(1));
    cluster.expect_event(Mark::START, "ready", Some(2));
    cluster
}

/// A fixture client script's lines (`open CLIENT PID`, `close CLIENT
/// CODE`…), as it prints them.
struct Clients {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Clients {
    fn start(script: &str, port: u16) -> Clients {
        let mut child = Command::new("node")
            .arg(format!("{FIXTURES}/{script}"))
            .args([port.to_string(), CLIENTS.to_string()])
            .current_dir(FIXTURES)
            .stdout(Stdio::piped())
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Clients { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `condition` holds for the lines so far; fails the test
    /// with them, saying it awaited `what`, if it does not within PATIENCE.
    fn await_lines(&self, what: &str, condition: impl Fn(&[String]) -> bool) {
        if !wait_until(PATIENCE, || condition(&self.lines())) {
            panic!(
                "{what}: not within {PATIENCE:?}; lines:\n{:#?}",
                self.lines()
            );
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(kind, client, value)` of each line: `("open", 3, "1234")`.
fn parsed(lines: &[String]) -> Vec<(String, usize, String)> {
    lines
        .iter()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let kind = parts.next()?.to_string();
            let client = parts.next()?.parse().ok()?;
            Some((kind, client, parts.next()?.to_string()))
        })
        .collect()
}

/// The worker pid each client is connected to now (by its last `open`).
fn connected(lines: &[String]) -> BTreeMap<usize, u32> {
    let mut now = BTreeMap::new();
    for (kind, client, value) in parsed(lines) {
        match kind.as_str() {
            "open" => {
                now.insert(client, value.parse().unwrap_or(0));
            }
            "close" => {
                now.remove(&client);
            }
            _ => {}
        }
    }
    now
}

/// Every close's code or reason.
fn closes(lines: &[String]) -> Vec<String> {
    parsed(lines)
        .into_iter()
        .filter(|(kind, _, _)| kind == "close")
        .map(|(_, _, value)| value)
        .collect()
}

/// The pids of the workers ready now.
fn ready_pids(cluster: &ClusterProcess) -> Vec<u64> {
    let status = cluster.status_json();
    status["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter(|worker| worker["state"] == "ready")
        .filter_map(|worker| worker["pid"].as_u64())
        .collect()
}

/// Reloads with `corral reload`; what it printed.
fn reload(cluster: &ClusterProcess) -> String {
    let output = cluster.control(&["reload", NAME]);
    assert!(output.status.success(), "reload failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every client connected, then a reload: each is closed with `expected`
/// (never cut), reconnects to a new worker and works there; the old
/// workers exit, well before the grace ends. The reload said old workers
/// were still draining.
fn assert_clients_move_over(cluster: &ClusterProcess, script: &str, expected: &str) {
    let port = cluster.bound_port();
    let clients = Clients::start(script, port);
    clients.await_lines("every client connected", |lines| {
        connected(lines).len() == CLIENTS
    });
    let before = cluster.mark();
    let said = reload(cluster);
    assert!(
        said.contains("reload completed: 2 workers replaced") && said.contains("still draining"),
        "{said}"
    );
    let new_pids = ready_pids(cluster);
    clients.await_lines("every client on a new worker", |lines| {
        let now = connected(lines);
        now.len() == CLIENTS && now.values().all(|pid| new_pids.contains(&u64::from(*pid)))
    });
    // The two old workers exit by themselves, not killed at the grace's end.
    let exits = cluster.expect_events_where(before, 2, "the old workers exit", |event| {
        event.is("exit") && event.has("requested", true) && event.has("signal", None::<&str>)
    });
    assert_eq!(exits.len(), 2);
    let codes = closes(&clients.lines());
    assert!(codes.len() >= CLIENTS, "{codes:?}");
    assert!(codes.iter().all(|code| code == expected), "{codes:?}");
    if script == "ws_clients.js" {
        // Each client's connection to its new worker carries messages.
        clients.await_lines("an echo from a new worker for every client", |lines| {
            (0..CLIENTS).all(|client| {
                parsed(lines).iter().any(|(kind, of, pid)| {
                    kind == "echo" && *of == client && new_pids.contains(&pid.parse().unwrap_or(0))
                })
            })
        });
    }
}

fn stop(mut cluster: ClusterProcess) {
    cluster.signal(corral_testkit::Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("the cluster stops");
    assert!(status.success(), "{status:?}\n{}", cluster.output());
}

/// [`assert_clients_move_over`] for `app` (with `env`) under `policy`.
fn reload_moves_clients(
    app: &str,
    env: &[(&str, &str)],
    policy: &str,
    script: &str,
    expected: &str,
) {
    if !have_node() {
        return;
    }
    let cluster = cluster(app, policy, &[], env);
    assert_clients_move_over(&cluster, script, expected);
    stop(cluster);
}

#[test]
fn ws_clients_of_a_server_attached_app_get_1001_and_reconnect_under_reuseport() {
    let attached = [("WS_SHAPE", "server")];
    reload_moves_clients(
        "ws_server.js",
        &attached,
        "reuseport",
        "ws_clients.js",
        "1001",
    );
}

#[test]
fn ws_clients_of_a_no_server_app_get_1001_and_reconnect_under_round_robin() {
    let no_server = [("WS_SHAPE", "noserver")];
    reload_moves_clients(
        "ws_server.js",
        &no_server,
        "round-robin",
        "ws_clients.js",
        "1001",
    );
}

#[test]
fn ws_clients_of_a_no_server_app_get_1001_and_reconnect_under_reuseport() {
    let no_server = [("WS_SHAPE", "noserver")];
    reload_moves_clients(
        "ws_server.js",
        &no_server,
        "reuseport",
        "ws_clients.js",
        "1001",
    );
}

#[test]
fn socket_io_clients_are_disconnected_by_transport_close_and_reconnect() {
    let (app, clients) = ("socketio_server.js", "socketio_clients.js");
    reload_moves_clients(app, &[], "reuseport", clients, "transport_close");
}

/// With the closes spread over 3 s, `corral status` shows the old
/// workers draining after the reload completed, in text and JSON.
#[test]
fn status_shows_old_workers_draining_after_the_reload() {
    if !have_node() {
        return;
    }
    let cluster = cluster("ws_server.js", "reuseport", &["--ws-close-after", "3"], &[]);
    let clients = Clients::start("ws_clients.js", cluster.bound_port());
    clients.await_lines("every client connected", |lines| {
        connected(lines).len() == CLIENTS
    });
    reload(&cluster);
    let status = cluster.status_json();
    let stopping = status["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter(|worker| worker["state"] == "stopping")
        .count();
    assert!(stopping >= 1, "{status:#}");
    assert_eq!(status["stopping"], false, "{status:#}");
    let text = cluster.control(&["status", NAME]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("still draining"), "{text}");
    stop(cluster);
}

/// A close delay that does not fit in the grace is warned of at start.
#[test]
fn a_close_delay_past_the_grace_is_warned_of() {
    if !have_node() {
        return;
    }
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "1", "--name", NAME, "--grace", "2"])
        .args(["--ws-close-after", "5", "--"])
        .arg("node")
        .arg(format!("{FIXTURES}/ws_server.js"))
        .env("PORT", "0");
    let cluster = ClusterProcess::spawn(command);
    cluster.expect_line("do not fit in --grace 2.0s");
    cluster.expect_event(Mark::START, "ready", Some(1));
    stop(cluster);
}
