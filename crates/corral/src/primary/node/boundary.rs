//! The privilege boundary of on-demand binds: a Node worker gets from the
//! primary only what it could have bound itself, or what the operator
//! allowed (`--allow-worker-binds`, besides `--listen` and systemd's
//! sockets, which are served before this rule applies).
//!
//! The boundary exists when the primary holds privileges its workers lack:
//! they run as another user (`--user`), or the primary has effective
//! capabilities that are not in its ambient set (a `setcap` binary, whose
//! workers exec `node` without them). Then:
//! * a TCP or UDP port below `net.ipv4.ip_unprivileged_port_start` (other
//!   than 0) is refused with `EACCES`, as the worker's own `bind` would be,
//!   unless the operator allowed that port;
//! * a Unix socket path is bound with the worker's credentials (so the
//!   kernel refuses `/etc/x.sock` with `EACCES` as it would refuse the
//!   worker), unless its directory is one the operator allowed: then the
//!   primary binds it inside that directory itself.
//!
//! Without a boundary, workers have the primary's own privileges and every
//! bind is made as the primary.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use rustix::thread::CapabilitySet;

use super::socket_file::Credentials;
use crate::error::Error;
use crate::settings::run_as::RunAs;

/// Where the kernel says which ports need a privilege.
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
/// The kernel's default, when the file cannot be read.
const DEFAULT_UNPRIVILEGED_PORT_START: u16 = 1024;

/// What the operator lets workers have the primary bind for them
/// (`--allow-worker-binds 80,443,1000-1023,/run/app`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AllowedBinds {
    ports: Vec<RangeInclusive<u16>>,
    dirs: Vec<PathBuf>,
}

impl AllowedBinds {
    /// Parses entries: a port (`80`), a range of ports (`1000-1023`), or an
    /// absolute directory (`/run/app`) in which workers' Unix sockets are
    /// bound by the primary.
    pub(crate) fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, Error> {
        let mut allowed = AllowedBinds::default();
        for entry in entries.iter().map(AsRef::as_ref) {
            allowed.add(entry)?;
        }
        Ok(allowed)
    }

    fn add(&mut self, entry: &str) -> Result<(), Error> {
        let entry = entry.trim();
        if entry.starts_with('/') {
            let dir = Path::new(entry);
            if dir
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(bad_entry(entry, "a directory may not contain `..`"));
            }
            self.dirs.push(dir.components().collect());
            return Ok(());
        }
        let port = |text: &str| {
            text.parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| bad_entry(entry, "a port is a number from 1 to 65535"))
        };
        let range = match entry.split_once('-') {
            Some((low, high)) => port(low)?..=port(high)?,
            None => port(entry)?..=port(entry)?,
        };
        if range.is_empty() {
            return Err(bad_entry(
                entry,
                "a range goes from low to high, as 1000-1023",
            ));
        }
        self.ports.push(range);
        Ok(())
    }

    fn allows_port(&self, port: u16) -> bool {
        self.ports.iter().any(|range| range.contains(&port))
    }

    /// The allowed directory that `path` (absolute) is directly inside.
    fn dir_of(&self, path: &Path) -> Option<&Path> {
        let parent = path.parent()?;
        path.file_name()?;
        self.dirs
            .iter()
            .map(PathBuf::as_path)
            .find(|dir| *dir == parent)
    }
}

fn bad_entry(entry: &str, why: &str) -> Error {
    Error::Config(format!(
        "--allow-worker-binds {entry:?}: {why}; write ports, ranges or absolute directories, as \
         80,1000-1023,/run/app"
    ))
}

/// Whether the primary holds privileges its workers lack, and what the
/// operator allowed them anyway.
#[derive(Debug)]
pub(crate) struct Boundary {
    /// `None`: workers have the primary's privileges; no bind is refused.
    workers: Option<Credentials>,
    unprivileged_port_start: u16,
    allowed: AllowedBinds,
}

impl Boundary {
    /// The boundary of this process's workers (running as `run_as`).
    pub(crate) fn of_this_process(run_as: Option<&RunAs>, allowed: AllowedBinds) -> Self {
        let workers = match run_as {
            Some(run_as) => Some(Credentials::User(run_as.clone())),
            None if capabilities_not_inherited() => Some(Credentials::NoCapabilities),
            None => None,
        };
        Boundary {
            workers,
            unprivileged_port_start: unprivileged_port_start(),
            allowed,
        }
    }

    /// No boundary: workers have the primary's privileges.
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        Boundary {
            workers: None,
            unprivileged_port_start: DEFAULT_UNPRIVILEGED_PORT_START,
            allowed: AllowedBinds::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_workers(workers: Credentials, allowed: AllowedBinds) -> Self {
        Boundary {
            workers: Some(workers),
            unprivileged_port_start: DEFAULT_UNPRIVILEGED_PORT_START,
            allowed,
        }
    }

    /// `Err(reason)` when a worker may not have `port` bound for it.
    pub(crate) fn check_port(&self, port: u16) -> Result<(), String> {
        let privileged = port != 0 && port < self.unprivileged_port_start;
        if self.workers.is_none() || !privileged || self.allowed.allows_port(port) {
            return Ok(());
        }
        Err(format!(
            "port {port} is below {} (ip_unprivileged_port_start) and workers lack the privilege \
             to bind it: refused; to let workers have it, add --allow-worker-binds {port}, or \
             bind it up front with --listen",
            self.unprivileged_port_start
        ))
    }

    /// Whose credentials bind (and later remove) the Unix socket `path`
    /// (absolute), and in which allowed directory the primary binds it.
    pub(crate) fn unix_binder(&self, path: &Path) -> (Credentials, Option<PathBuf>) {
        match (&self.workers, self.allowed.dir_of(path)) {
            (None, _) => (Credentials::Primary, None),
            (Some(_), Some(dir)) => (Credentials::Primary, Some(dir.to_path_buf())),
            (Some(workers), None) => (workers.clone(), None),
        }
    }
}

fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string(UNPRIVILEGED_PORT_START)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(DEFAULT_UNPRIVILEGED_PORT_START)
}

/// Whether this process has an effective capability that a program it
/// executes would not keep (root keeps them all; others keep the ambient set).
fn capabilities_not_inherited() -> bool {
    if rustix::process::geteuid().is_root() {
        return false;
    }
    let Ok(sets) = rustix::thread::capabilities(None) else {
        return false;
    };
    let wanted = CapabilitySet::NET_BIND_SERVICE
        | CapabilitySet::DAC_OVERRIDE
        | CapabilitySet::DAC_READ_SEARCH
        | CapabilitySet::FOWNER
        | CapabilitySet::CHOWN;
    let effective = sets.effective & wanted;
    !effective.is_empty() && !ambient_contains(effective)
}

fn ambient_contains(set: CapabilitySet) -> bool {
    set.iter()
        .all(|one| rustix::thread::capability_is_in_ambient_set(one) == Ok(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> Credentials {
        Credentials::User(RunAs {
            uid: 65534,
            gid: 65534,
            spec: "nobody".into(),
        })
    }

    #[test]
    fn entries_are_ports_ranges_and_directories() {
        let allowed = AllowedBinds::parse(&["80", "1000-1023", "/run/app/"]).unwrap();
        assert!(allowed.allows_port(80) && allowed.allows_port(1010));
        assert!(!allowed.allows_port(81) && !allowed.allows_port(999));
        assert_eq!(
            allowed.dir_of(Path::new("/run/app/x.sock")),
            Some(Path::new("/run/app"))
        );
        assert_eq!(allowed.dir_of(Path::new("/run/app/sub/x.sock")), None);
        assert_eq!(allowed.dir_of(Path::new("/run/x.sock")), None);
        for bad in ["0", "http", "1023-1000", "70000", "/run/../etc", ""] {
            let err = AllowedBinds::parse(&[bad]).unwrap_err().to_string();
            assert!(err.contains("--allow-worker-binds"), "{bad}: {err}");
        }
    }

    #[test]
    fn privileged_ports_are_refused_across_the_boundary_unless_allowed() {
        let open = Boundary::none();
        assert!(open.check_port(22).is_ok());
        let allowed = AllowedBinds::parse(&["80", "/run/app"]).unwrap();
        let closed = Boundary::for_workers(nobody(), allowed);
        for port in [1, 22, 25, 53, 443, 1023] {
            let reason = closed.check_port(port).unwrap_err();
            assert!(reason.contains("--allow-worker-binds"), "{reason}");
        }
        for port in [0, 80, 1024, 8000] {
            assert!(closed.check_port(port).is_ok(), "{port}");
        }
        assert_eq!(
            closed.unix_binder(Path::new("/etc/x.sock")),
            (nobody(), None)
        );
        assert_eq!(
            closed.unix_binder(Path::new("/run/app/x.sock")),
            (Credentials::Primary, Some(PathBuf::from("/run/app")))
        );
        assert_eq!(
            open.unix_binder(Path::new("/etc/x.sock")),
            (Credentials::Primary, None)
        );
    }
}
