//! Dropping privileges for workers (`--user USER[:GROUP]`, `Cluster::user`):
//! the primary, started as root, binds the configured sockets (ports below
//! 1024 too) and starts each worker as that user and group, with
//! supplementary groups cleared, so a compromised worker holds no root
//! power. The primary itself stays root: it must bind the sockets of new
//! reuseport slots, signal and reap workers of another uid, and read their
//! `/proc` entries. What a Node worker's own `listen()` may have it bind is
//! `node/boundary.rs`: no more than the worker could bind itself.

use std::fmt;

use nix::unistd::{Group, User};

use crate::error::Error;

/// The user and group workers run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// As the user wrote it, for logs.
    pub spec: String,
}

impl fmt::Display for RunAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (uid {}, gid {})", self.spec, self.uid, self.gid)
    }
}

/// Splits `USER[:GROUP]`; each part is a name or a number.
pub(crate) fn split_spec(spec: &str) -> Result<(&str, Option<&str>), Error> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(Error::Config(format!(
            "--user {spec:?}: write USER or USER:GROUP, as nobody or www-data:www-data"
        )));
    }
    Ok((user, group))
}

/// Resolves `USER[:GROUP]` through the system's user database; the group
/// defaults to the user's primary group. Only root can start processes as
/// another user: anyone else gets an error saying so.
pub(crate) fn resolve(spec: &str) -> Result<RunAs, Error> {
    let (user_part, group_part) = split_spec(spec)?;
    if !rustix::process::geteuid().is_root() {
        return Err(Error::Config(format!(
            "--user {spec} needs root: corral runs as uid {}; start it as root (it binds, then \
             starts workers as {user_part}), or drop --user",
            rustix::process::geteuid().as_raw()
        )));
    }
    let lookup = |err: nix::Error| Error::Config(format!("--user {spec:?}: lookup failed: {err}"));
    let user = match user_part.parse::<u32>() {
        Ok(uid) => User::from_uid(uid.into()).map_err(lookup)?,
        Err(_) => User::from_name(user_part).map_err(lookup)?,
    };
    let uid = match (&user, user_part.parse::<u32>()) {
        (Some(user), _) => user.uid.as_raw(),
        (None, Ok(uid)) => uid,
        (None, Err(_)) => {
            return Err(Error::Config(format!(
                "--user {spec:?}: no user named {user_part:?} on this system"
            )));
        }
    };
    let gid = match group_part {
        None => match &user {
            Some(user) => user.gid.as_raw(),
            None => {
                return Err(Error::Config(format!(
                    "--user {spec:?}: uid {uid} has no entry in the user database: give the \
                     group too, as {uid}:GID"
                )));
            }
        },
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(group)
                .map_err(lookup)?
                .map(|group| group.gid.as_raw())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--user {spec:?}: no group named {group:?} on this system"
                    ))
                })?,
        },
    };
    Ok(RunAs {
        uid,
        gid,
        spec: spec.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_split_into_user_and_group() {
        assert_eq!(split_spec("nobody").unwrap(), ("nobody", None));
        assert_eq!(
            split_spec("www-data:adm").unwrap(),
            ("www-data", Some("adm"))
        );
        for bad in ["", ":", "nobody:", ":adm"] {
            assert!(split_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_numbers_resolve_as_root() {
        if !rustix::process::geteuid().is_root() {
            let err = resolve("nobody").unwrap_err().to_string();
            assert!(err.contains("needs root"), "{err}");
            return;
        }
        let nobody = resolve("nobody").unwrap();
        assert_eq!(nobody.uid, 65534);
        assert_eq!(resolve("65534:0").unwrap().gid, 0);
        let err = resolve("no-such-user-here").unwrap_err().to_string();
        assert!(err.contains("no user named"), "{err}");
        let err = resolve("nobody:no-such-group-here")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no group named"), "{err}");
    }
}
