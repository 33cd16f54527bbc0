//! The one module with `unsafe` code: the few system calls that no safe
//! wrapper covers for corral.
//!
//! * Starting a worker. `LISTEN_PID` must equal the worker's own pid, which is
//!   only known after `fork`. Between `fork` and `exec` a child of a
//!   multi-threaded process may not allocate, so the program, argv and the
//!   whole environment are prepared as C strings in the parent
//!   ([`ExecImage`]); the child only writes its pid into a reserved buffer,
//!   sets its parent-death signal, marks every descriptor above the ones it
//!   is given close-on-exec (so nothing corral itself inherited, such as a
//!   shell's `7>file` or a test harness's pipes, reaches the worker) and
//!   calls `execve` itself.
//! * Registering a descriptor with tokio's reactor ([`register_async`]):
//!   `AsyncFd::register` is `unsafe` because it cannot know the descriptor
//!   stays open; an `OwnedFd` moved into it does.
//! * Scheduling the primary as a batch task ([`schedule_as_batch`]) and its
//!   workers back as normal ones, which no safe wrapper offers.
//! * Adopting inherited descriptors. A worker receives its sockets as bare
//!   numbers in its environment; turning a number into an `OwnedFd` is
//!   `unsafe` because nothing else may own it. [`adopt_inherited_fds`] does it
//!   once per process.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::{Pid, Signal};

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// The prefix, the longest decimal pid (a u32 has 10 digits) and the NUL.
const LISTEN_PID_CAPACITY: usize = LISTEN_PID_PREFIX.len() + 10 + 1;

/// A fully prepared `execve` call whose `LISTEN_PID` entry the child fills in.
pub(crate) struct ExecImage {
    program: CString,
    // The owned strings are never read again: they keep the pointers valid.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    /// The `LISTEN_PID=` entry's buffer, never touched through this owner
    /// after `new`: the child writes through `env_ptrs[listen_pid_at]`,
    /// the very pointer `execve` receives.
    _listen_pid: Vec<u8>,
    env_ptrs: Vec<*const libc::c_char>,
    listen_pid_at: usize,
    death_signal: Signal,
    primary_pid: Pid,
    /// Descriptors from this number up are closed by the `execve`.
    first_closed_fd: u32,
    /// The primary runs `SCHED_BATCH`: put the worker back on `SCHED_OTHER`.
    reset_scheduling: bool,
    /// Where the fallback for old kernels (no `close_range`) stops.
    fd_limit: u32,
}

// SAFETY: the raw pointers point into heap buffers owned by the same value
// (the `CString`s and the `LISTEN_PID` buffer), which never move or get
// freed while it lives. The parent never reads or writes through them; only
// the forked child writes, into its own copy of the memory.
unsafe impl Send for ExecImage {}
// SAFETY: as above; there is no shared mutation.
unsafe impl Sync for ExecImage {}

impl ExecImage {
    /// Prepares `program` with `args` (argv[0] included) and `env`
    /// (`LISTEN_PID` is added by the image). The child will get
    /// `death_signal` when `primary_pid` dies.
    pub(crate) fn new(
        program: &OsStr,
        args: &[OsString],
        env: &[(OsString, OsString)],
        death_signal: Signal,
        primary_pid: Pid,
    ) -> io::Result<Self> {
        let program = c_string(program.as_bytes())?;
        let argv: Vec<CString> = args
            .iter()
            .map(|arg| c_string(arg.as_bytes()))
            .collect::<io::Result<_>>()?;
        let env: Vec<CString> = env
            .iter()
            .map(|(key, value)| {
                let mut entry = key.as_bytes().to_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                c_string(&entry)
            })
            .collect::<io::Result<_>>()?;
        let mut listen_pid = vec![0u8; LISTEN_PID_CAPACITY];
        listen_pid[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
        // A pointer with write permission: the child fills in the digits.
        let listen_pid_entry = listen_pid.as_mut_ptr().cast::<libc::c_char>();

        let argv_ptrs = null_terminated(argv.iter().map(|arg| arg.as_ptr()));
        let listen_pid_at = env.len();
        let env_ptrs = null_terminated(
            env.iter()
                .map(|entry| entry.as_ptr())
                .chain(std::iter::once(listen_pid_entry.cast_const())),
        );
        Ok(Self {
            program,
            _argv: argv,
            argv_ptrs,
            _env: env,
            _listen_pid: listen_pid,
            env_ptrs,
            listen_pid_at,
            death_signal,
            primary_pid,
            first_closed_fd: 3,
            reset_scheduling: BATCH_SCHEDULED.load(Ordering::Relaxed),
            fd_limit: descriptor_limit(),
        })
    }

    /// Keeps descriptors below `first` open in the worker (stdio and the
    /// ones mapped for it); every other one is closed by the `execve`.
    pub(crate) fn closing_fds_from(mut self, first: RawFd) -> Self {
        self.first_closed_fd = u32::try_from(first).unwrap_or(3).max(3);
        self
    }

    /// Spawns `command` as this image. The command is taken whole, so the
    /// image's hook is its last `pre_exec` by construction: every other
    /// set-up (descriptor mappings, uid, process group) is already in it
    /// and runs first, and nothing can be added after. The hook calls
    /// `execve` itself and never returns on success.
    pub(crate) fn spawn(
        self,
        mut command: tokio::process::Command,
    ) -> io::Result<tokio::process::Child> {
        let mut image = self;
        // SAFETY: `exec_in_child` only makes async-signal-safe system calls
        // (prctl, getppid, getpid, sched_setscheduler, close_range or fcntl,
        // execve) and writes
        // into memory the image owns; it does not allocate, lock or touch
        // other threads' state.
        unsafe {
            command.pre_exec(move || image.exec_in_child());
        }
        // Dropping the command after the spawn closes the primary's copies
        // of the descriptors mapped into the child.
        command.spawn()
    }

    /// Runs in the forked child. Returns only on failure.
    fn exec_in_child(&mut self) -> io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(self.death_signal))?;
        // The primary may have died before the line above took effect: the
        // child would then already belong to another parent and never get
        // the signal. `from_raw_os_error` does not allocate.
        if rustix::process::getppid() != Some(self.primary_pid) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        let entry = self.env_ptrs[self.listen_pid_at].cast_mut().cast::<u8>();
        // SAFETY: `entry` is the `LISTEN_PID=` buffer of LISTEN_PID_CAPACITY
        // bytes, which `self` owns and which nothing else reads or writes
        // (its owner field is never used after `new`); the pointer was made
        // from a mutable borrow, so it may write. It is the pointer `execve`
        // passes on, so what is written here is what the worker sees.
        let digits = unsafe {
            std::slice::from_raw_parts_mut(
                entry.add(LISTEN_PID_PREFIX.len()),
                LISTEN_PID_CAPACITY - LISTEN_PID_PREFIX.len(),
            )
        };
        write_decimal(
            rustix::process::getpid().as_raw_nonzero().get() as u32,
            digits,
        );
        if self.reset_scheduling {
            set_scheduling_policy(libc::SCHED_OTHER);
        }
        close_on_exec_from(self.first_closed_fd, self.fd_limit);
        // SAFETY: every pointer is a NUL-terminated string owned by `self`,
        // and both arrays end with a null pointer.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.env_ptrs.as_ptr(),
            );
        }
        Err(io::Error::last_os_error())
    }
}

/// Marks every descriptor from `first` up close-on-exec, in the child
/// between `fork` and `exec` (no allocation). Marking rather than closing
/// keeps the descriptors the runtime's own `exec` error pipe needs.
fn close_on_exec_from(first: u32, limit: u32) {
    // SAFETY: close_range only changes descriptor flags in this process's
    // table; with CLOSE_RANGE_CLOEXEC it closes nothing before the exec.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked == 0 {
        return;
    }
    // Kernels before 5.11: one fcntl per possible descriptor.
    for fd in first..limit {
        // SAFETY: F_SETFD on a number that may not be open only fails with
        // EBADF; it touches nothing else.
        unsafe {
            libc::fcntl(fd as RawFd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// The highest descriptor number this process can have, plus one (for the
/// fallback above), at most 65,536.
fn descriptor_limit() -> u32 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit
        .current
        .map_or(65_536, |current| current.min(65_536) as u32)
}

/// Raises this process's soft limit of open descriptors to its hard limit
/// (workers inherit it): a primary of many workers, each with its channels
/// and handed connections, runs out of the usual 1024 soft limit long before
/// the machine does. Returns the new soft limit.
pub(crate) fn raise_descriptor_limit() -> io::Result<Option<u64>> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(limit.current);
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised)?;
    Ok(raised.current)
}

/// Set once the primary moved itself to `SCHED_BATCH`: children inherit
/// that policy (`SCHED_RESET_ON_FORK` resets only real-time policies and
/// negative nice values), so each worker is put back on `SCHED_OTHER`
/// between its fork and exec.
static BATCH_SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Moves the calling thread (the primary's runtime thread, before it starts
/// any other) from `SCHED_OTHER` to `SCHED_BATCH`, so that when workers keep
/// every core busy, a new connection's wake-up does not preempt a worker to
/// hand out that one connection: the primary runs when the core frees up or
/// at the next tick and hands out all that queued meanwhile. An idle core
/// still runs it at once. A primary started under another policy (`chrt`)
/// keeps it. Returns whether the policy changed.
pub(crate) fn schedule_as_batch() -> io::Result<bool> {
    // SAFETY: sched_getscheduler only reads the calling thread's policy.
    let policy = unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0) };
    if policy == -1 {
        return Err(io::Error::last_os_error());
    }
    if policy != libc::c_long::from(libc::SCHED_OTHER) {
        return Ok(false);
    }
    if !set_scheduling_policy(libc::SCHED_BATCH) {
        return Err(io::Error::last_os_error());
    }
    BATCH_SCHEDULED.store(true, Ordering::Relaxed);
    Ok(true)
}

/// The kernel's `struct sched_param`. The scheduling calls are made as
/// system calls, not through the C library: musl's `sched_getscheduler` and
/// `sched_setscheduler` fail with ENOSYS without asking the kernel (and its
/// `sched_param` has more fields), and corral's static binary is built with
/// musl.
#[repr(C)]
struct SchedParam {
    sched_priority: libc::c_int,
}

/// Sets the calling thread's policy (one without priorities: `SCHED_OTHER`,
/// `SCHED_BATCH`); async-signal-safe, so a forked child may call it.
fn set_scheduling_policy(policy: libc::c_int) -> bool {
    let param = SchedParam { sched_priority: 0 };
    // SAFETY: `param` has the layout of the kernel's sched_param and
    // outlives the call; the call changes only the calling thread's
    // scheduling policy.
    unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            policy,
            std::ptr::from_ref(&param),
        ) == 0
    }
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument or environment variable contains a NUL byte",
        )
    })
}

fn null_terminated(
    pointers: impl Iterator<Item = *const libc::c_char>,
) -> Vec<*const libc::c_char> {
    pointers.chain(std::iter::once(std::ptr::null())).collect()
}

/// Writes `value` in decimal followed by a NUL into `out`, without allocating.
fn write_decimal(mut value: u32, out: &mut [u8]) {
    let mut digits = [0u8; 10];
    let mut count = 0;
    loop {
        digits[count] = b'0' + (value % 10) as u8;
        count += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for (slot, digit) in out.iter_mut().zip(digits[..count].iter().rev()) {
        *slot = *digit;
    }
    out[count] = 0;
}

/// Registers `fd` with the current tokio runtime for `interest`.
pub(crate) fn register_async(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` takes ownership of the `OwnedFd`, so the
    // descriptor is open, refers to the same open file description for the
    // `AsyncFd`'s whole life, and `as_raw_fd` always returns the same number.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|err| err.into_parts().1)
}

/// The length of a listening TCP socket's accept queue: connections the
/// kernel completed that nobody accepted yet (`tcpi_unacked` of
/// `TCP_INFO`, which for a listening socket is its backlog in use).
pub(crate) fn accept_queue_len(socket: std::os::fd::BorrowedFd<'_>) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    // The start of the kernel's `struct tcp_info`: 8 one-byte fields, then
    // u32 fields, of which `tcpi_unacked` is the fifth. The kernel copies
    // only as many bytes as asked for.
    let mut info = [0u32; 8];
    let mut length = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `length` bytes that outlives
    // the call, and `length` is a valid pointer to its size; the kernel
    // writes at most `length` bytes and updates `length`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut length,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    if (length as usize) < 7 * 4 {
        return Err(io::Error::other("TCP_INFO answer too short"));
    }
    Ok(info[6])
}

static INHERITED_FDS_ADOPTED: AtomicBool = AtomicBool::new(false);

/// Takes ownership of descriptors this process inherited by number. Callable
/// once per process: a second call fails, so no descriptor gets two owners.
/// Each adopted descriptor is marked close-on-exec, so it does not leak into
/// programs the worker itself starts.
pub(crate) fn adopt_inherited_fds(numbers: &[RawFd]) -> io::Result<Vec<OwnedFd>> {
    if INHERITED_FDS_ADOPTED.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other(
            "the inherited descriptors were already taken by this process",
        ));
    }
    let mut adopted = Vec::with_capacity(numbers.len());
    for &number in numbers {
        // SAFETY: F_GETFD only reads the descriptor table.
        if number < 0 || unsafe { libc::fcntl(number, libc::F_GETFD) } == -1 {
            return Err(io::Error::other(format!(
                "descriptor {number} named in the environment is not open"
            )));
        }
        // SAFETY: the descriptor is open (checked above), was handed to this
        // process by its parent for exactly this use, and the flag above
        // guarantees it is adopted only once.
        let fd = unsafe { OwnedFd::from_raw_fd(number) };
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        adopted.push(fd);
    }
    Ok(adopted)
}

/// Makes this process the leader of a new session with no controlling
/// terminal (`setsid`): what `corral start` asks of the `corral run` it
/// starts, so that no terminal's hangup or ^C reaches it.
pub fn new_session() -> io::Result<()> {
    rustix::process::setsid().map(drop).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_child_finds_its_own_pid_in_listen_pid() {
        let args: Vec<OsString> = ["sh", "-c", "echo $LISTEN_PID $$ $CORRAL_TEST"]
            .into_iter()
            .map(OsString::from)
            .collect();
        let env = [(OsString::from("CORRAL_TEST"), OsString::from("seen"))];
        let image = ExecImage::new(
            OsStr::new("/bin/sh"),
            &args,
            &env,
            Signal::TERM,
            rustix::process::getpid(),
        )
        .unwrap();
        let mut command = tokio::process::Command::new("/bin/sh");
        command.stdout(std::process::Stdio::piped());
        let child = image.spawn(command).unwrap();
        let pid = child.id().expect("running");
        let output = child.wait_with_output().await.unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        assert_eq!(text.trim(), format!("{pid} {pid} seen"));
    }

    #[test]
    fn decimal_is_written_with_a_terminating_nul() {
        let mut out = [0xffu8; 11];
        write_decimal(4_194_304, &mut out);
        assert_eq!(&out[..8], b"4194304\0");
        write_decimal(0, &mut out);
        assert_eq!(&out[..2], b"0\0");
        write_decimal(u32::MAX, &mut out);
        assert_eq!(&out[..11], b"4294967295\0");
    }

    #[test]
    fn the_accept_queue_counts_connections_not_accepted() {
        use std::os::fd::AsFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        assert_eq!(accept_queue_len(listener.as_fd()).unwrap(), 0);
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(address).unwrap())
            .collect();
        assert_eq!(accept_queue_len(listener.as_fd()).unwrap(), 3);
        drop(listener.accept().unwrap());
        assert_eq!(accept_queue_len(listener.as_fd()).unwrap(), 2);
        drop(clients);
    }
}
