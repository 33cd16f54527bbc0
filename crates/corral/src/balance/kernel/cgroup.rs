//! The cgroup v2 the primary runs in: least-connections' open-connection
//! counter (a `SOCK_OPS` program) attaches there, because the sockets of
//! the connections it counts are the children of the primary's listening
//! sockets, which belong to the cgroup the primary was in when it bound
//! them. Found from `/proc/self/mountinfo` (where cgroup2 is mounted:
//! `/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on a hybrid
//! one) and `/proc/self/cgroup` (the `0::` line: the path in it).

use std::fs::File;
use std::path::PathBuf;

use super::program::Unavailable;

/// Opens the directory of the primary's cgroup v2.
pub(crate) fn open_own() -> Result<File, Unavailable> {
    let directory = own_directory()?;
    File::open(&directory)
        .map_err(|err| format!("cannot open the cgroup {}: {err}", directory.display()))
}

fn own_directory() -> Result<PathBuf, Unavailable> {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|err| format!("cannot read {path}: {err}"))
    };
    let mount =
        cgroup2_mount(&read("/proc/self/mountinfo")?).ok_or("no cgroup2 file system is mounted")?;
    let path = unified_path(&read("/proc/self/cgroup")?)
        .ok_or("the process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")?;
    directory(&mount, &path)
}

/// A cgroup2 mount: where it is, and which cgroup its root is.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    root: String,
}

/// The first cgroup2 mount in `mountinfo`'s lines (`id parent major:minor
/// root point options [optional…] - type source super-options`).
fn cgroup2_mount(mountinfo: &str) -> Option<Mount> {
    mountinfo.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        if filesystem.split(' ').next() != Some("cgroup2") {
            return None;
        }
        let mut fields = mount.split(' ').skip(3);
        let root = unescape(fields.next()?);
        let point = PathBuf::from(unescape(fields.next()?));
        Some(Mount { point, root })
    })
}

/// The path of the `0::` line of `/proc/self/cgroup` (cgroup v2).
fn unified_path(cgroups: &str) -> Option<String> {
    cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
}

/// The directory of the cgroup `path` under `mount`.
fn directory(mount: &Mount, path: &str) -> Result<PathBuf, Unavailable> {
    let root = mount.root.trim_end_matches('/');
    let below = path
        .strip_prefix(root)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .ok_or_else(|| {
            format!(
                "the process's cgroup {path} is not under the cgroup2 mount at {} (its root is {})",
                mount.point.display(),
                mount.root
            )
        })?;
    Ok(mount.point.join(below.trim_start_matches('/')))
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes.get(index + 1..index + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[index], escaped) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                index += 4;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
";

    #[test]
    fn a_hybrid_hosts_unified_mount_is_found() {
        let mount = cgroup2_mount(HYBRID).unwrap();
        assert_eq!(mount.point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(mount.root, "/");
    }

    #[test]
    fn no_cgroup2_mount_is_none() {
        let v1_only: String = HYBRID
            .lines()
            .filter(|line| !line.contains("cgroup2"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(cgroup2_mount(&v1_only), None);
    }

    #[test]
    fn the_unified_line_gives_the_path() {
        let cgroups =
            "12:cpu,cpuacct:/\n1:name=systemd:/init.scope\n0::/system.slice/app.service\n";
        assert_eq!(
            unified_path(cgroups).as_deref(),
            Some("/system.slice/app.service")
        );
        assert_eq!(unified_path("1:name=systemd:/\n"), None);
    }

    #[test]
    fn the_directory_is_the_path_under_the_mount_root() {
        let mount = Mount {
            point: PathBuf::from("/sys/fs/cgroup"),
            root: "/".into(),
        };
        assert_eq!(directory(&mount, "/").unwrap(), mount.point);
        assert_eq!(
            directory(&mount, "/system.slice/app.service").unwrap(),
            PathBuf::from("/sys/fs/cgroup/system.slice/app.service")
        );
        let container = Mount {
            point: PathBuf::from("/sys/fs/cgroup"),
            root: "/docker/abc".into(),
        };
        assert_eq!(
            directory(&container, "/docker/abc/inner").unwrap(),
            PathBuf::from("/sys/fs/cgroup/inner")
        );
        assert!(directory(&container, "/docker/abcdef").is_err());
        assert!(directory(&container, "/elsewhere").is_err());
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        assert_eq!(unescape(r"/mnt/my\040cgroup"), "/mnt/my cgroup");
        assert_eq!(unescape(r"/plain\x"), r"/plain\x");
    }
}
