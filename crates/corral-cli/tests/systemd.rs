//! corral under systemd: socket activation of the primary (the real
//! `systemd-socket-activate`), and `sd_notify` messages received on a real
//! Unix datagram socket given as `NOTIFY_SOCKET`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use corral_testkit::{
    ClusterProcess, Mark, PATIENCE, Signal, corral_path, free_port, http_get, parse_hello,
};

fn activator_missing() -> bool {
    let found = Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        eprintln!("skipped: systemd-socket-activate is not installed (apt-get install systemd)");
    }
    !found
}

/// `GET /` on a connection opened before anything accepts on the port.
fn get_on(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("the request is sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    answer
}

/// What `systemd-socket-activate` is to pass on of the environment
/// [`ClusterProcess::spawn`] sets up.
const ACTIVATOR_ENV: [&str; 6] = [
    "-E",
    "XDG_RUNTIME_DIR",
    "-E",
    "CORRAL_LOG_FORMAT",
    "-E",
    "CORRAL_LOG",
];

#[test]
fn a_socket_activated_primary_serves_on_the_socket_it_was_given() {
    if activator_missing() {
        return;
    }
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut command = Command::new("systemd-socket-activate");
    // The activator passes on only the environment it is told to: the
    // cluster's private control directory (so that parallel tests' clusters
    // named "demo" do not meet), and the JSON log that makes its events.
    command.args(ACTIVATOR_ENV);
    command.args([
        "-l",
        &address,
        corral_path(),
        "run",
        "-w",
        "2",
        "--grace",
        "2",
    ]);
    let mut cluster = ClusterProcess::spawn(command);
    cluster.expect_line("Listening on");
    // The activator starts corral on the first connection, which waits in
    // the inherited socket's queue and is served by a worker.
    let mut first = TcpStream::connect(&address).expect("the activator listens");
    let answer = get_on(&mut first);
    assert!(answer.contains("Hello from worker"), "{answer}");
    cluster.expect_line(&format!("using the socket passed by systemd for {address}"));
    cluster.expect_line(&format!("out|listening on {address}"));
    cluster.expect_event(Mark::START, "ready", Some(2));
    for _ in 0..20 {
        let hello = parse_hello(&http_get(port, "/").expect("served").body).expect("a hello");
        assert!(hello.id == 1 || hello.id == 2, "{hello:?}");
    }
    // The activator exec'd corral: same pid.
    cluster.signal(Signal::TERM);
    let status = cluster.wait_exit(PATIENCE).expect("corral stops");
    assert!(status.success(), "{status:?}:\n{}", cluster.output());
}

#[test]
fn a_listen_address_picks_the_inherited_socket_by_name() {
    if activator_missing() {
        return;
    }
    let (web, admin) = (free_port(), free_port());
    let mut command = Command::new("systemd-socket-activate");
    command.args(ACTIVATOR_ENV);
    command.args([
        "-l",
        &format!("127.0.0.1:{web}"),
        "-l",
        &format!("127.0.0.1:{admin}"),
        "--fdname=web:admin",
        corral_path(),
        "run",
        "-w",
        "1",
        "-l",
        "systemd:admin",
    ]);
    let cluster = ClusterProcess::spawn(command);
    cluster.wait_for_lines("Listening on", 2, PATIENCE);
    let mut first = TcpStream::connect(("127.0.0.1", admin)).expect("the activator listens");
    assert!(get_on(&mut first).contains("Hello from worker 1"));
    cluster.expect_line(&format!("out|listening on 127.0.0.1:{admin}"));
    assert!(
        !cluster
            .output()
            .contains(&format!("listening on 127.0.0.1:{web}")),
        "only the named socket is served:\n{}",
        cluster.output()
    );
}

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("corral-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("a notification socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket { path, socket }
    }

    /// Receives messages until one contains `needle`; returns every
    /// message received meanwhile, that one last.
    fn until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(len) = self.socket.recv(&mut buffer) {
                let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
                let done = message.lines().any(|line| line == needle);
                seen.push(message);
                if done {
                    return seen;
                }
            }
        }
        panic!("no {needle:?} from corral within {PATIENCE:?}; received {seen:?}");
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn systemd_is_told_ready_reloading_ready_and_stopping_in_order() {
    let notify = NotifySocket::bind("order");
    let mut command = Command::new(corral_path());
    command
        .args(["run", "-w", "2", "-l", "127.0.0.1:0", "--grace", "2"])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "300000");
    let mut cluster = ClusterProcess::spawn(command);

    let before_ready = notify.until("READY=1");
    let ready = before_ready.last().unwrap();
    assert!(
        ready.contains("STATUS=2/2 workers ready"),
        "{before_ready:?}"
    );
    // READY=1 comes once both workers are: every status before it says fewer.
    for message in &before_ready[..before_ready.len() - 1] {
        assert!(!message.contains("2/2"), "{before_ready:?}");
    }
    cluster.expect_event(Mark::START, "ready", Some(2));

    // The watchdog is pinged (every half of WATCHDOG_USEC).
    notify.until("WATCHDOG=1");

    let reload = cluster.mark();
    cluster.signal(Signal::HUP);
    let reloading = notify.until("RELOADING=1");
    let announcement = reloading.last().unwrap();
    assert!(
        announcement
            .lines()
            .any(|line| line.starts_with("MONOTONIC_USEC=")),
        "{announcement:?}"
    );
    assert!(announcement.contains("reloading 0/2"), "{announcement:?}");
    let during = notify.until("READY=1");
    assert!(
        during
            .iter()
            .any(|message| message.contains("reloading 1/2")),
        "{during:?}"
    );
    assert!(
        during
            .last()
            .unwrap()
            .contains("STATUS=2/2 workers ready\n"),
        "{during:?}"
    );
    let completed = cluster.expect_event(reload, "reload_completed", None);
    assert!(completed.has("kind", "rolling"), "{completed:?}");

    cluster.signal(Signal::TERM);
    notify.until("STOPPING=1");
    let status = cluster.wait_exit(PATIENCE).expect("corral stops");
    assert!(status.success(), "{status:?}");
}
