use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};

use sha2::{Digest, Sha256};

use super::*;

#[test]
fn the_committed_object_was_built_from_the_committed_source() {
    let source = include_bytes!("steer.bpf.c");
    let recorded = include_str!("steer.bpf.c.sha256").trim();
    let actual: String = Sha256::digest(source)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(
        actual, recorded,
        "steer.bpf.c changed since steer.bpf.o was built: run \
         crates/corral/src/balance/kernel/build-bpf and commit the object"
    );
}

/// Which of `slots`' sockets has a connection waiting (accepts it).
fn accepted_by(steered: &mut KernelSteered, slots: &[u32]) -> Option<u32> {
    for &slot in slots {
        let socket = &steered.sockets.slot_sockets(slot).unwrap()[0];
        socket.set_nonblocking(true).unwrap();
        match socket.accept() {
            Ok(_) => return Some(slot),
            Err(err) if err.kind() == ErrorKind::WouldBlock => continue,
            Err(err) => panic!("accept: {err}"),
        }
    }
    None
}

fn key(slot: u32) -> WorkerKey {
    WorkerKey {
        slot,
        generation: 1,
        serial: u64::from(slot),
    }
}

/// Connects `count` times and says which slot took each connection.
fn spread(steered: &mut KernelSteered, slots: &[u32], count: usize) -> Vec<u32> {
    let address: SocketAddr = steered.local_addrs()[0];
    spread_to(address, steered, slots, count)
}

/// Connects to `address` `count` times and says which slot took each.
fn spread_to(
    address: SocketAddr,
    steered: &mut KernelSteered,
    slots: &[u32],
    count: usize,
) -> Vec<u32> {
    (0..count)
        .map(|_| {
            let _client = TcpStream::connect(address).unwrap();
            // The handshake is complete when connect returns.
            accepted_by(steered, slots).expect("the connection is in one slot's queue")
        })
        .collect()
}

/// Loads the program, or says why the test cannot (not root).
fn steered(policy: Policy, slots: usize) -> Option<KernelSteered> {
    steered_on("127.0.0.1:0", policy, slots)
}

/// The same, listening on `address`.
fn steered_on(address: &str, policy: Policy, slots: usize) -> Option<KernelSteered> {
    let address: SocketAddr = address.parse().unwrap();
    match KernelSteered::bind(&[address], slots, 64, policy).unwrap() {
        Ok(steered) => Some(steered),
        Err(why) if !rustix::process::geteuid().is_root() => {
            eprintln!("skipped, not root: {why}");
            None
        }
        Err(why) => panic!("the steering program does not load as root: {why}"),
    }
}

#[test]
fn the_programs_sticky_table_has_the_hand_off_tables_size() {
    let program = match program::SteeringProgram::load(Policy::Sticky) {
        Ok(program) => program,
        Err(why) if !rustix::process::geteuid().is_root() => {
            eprintln!("skipped, not root: {why}");
            return;
        }
        Err(why) => panic!("the steering program does not load as root: {why}"),
    };
    assert_eq!(
        program.sticky_table_len() as usize,
        crate::balance::sticky::TABLE_SIZE
    );
}

#[test]
fn round_robin_alternates_exactly_over_the_eligible_slots() {
    let Some(mut steered) = steered(Policy::RoundRobin, 3) else {
        return;
    };
    steered.worker_ready(key(1));
    steered.worker_ready(key(2));
    let picks = spread(&mut steered, &[1, 2, 3], 10);
    assert!(picks.windows(2).all(|pair| pair[0] != pair[1]), "{picks:?}");
    assert_eq!(picks.iter().filter(|&&slot| slot == 3).count(), 0);
    steered.worker_ready(key(3));
    steered.worker_leaving(key(1));
    let picks = spread(&mut steered, &[1, 2, 3], 10);
    assert!(!picks.contains(&1), "a leaving worker got one: {picks:?}");
    assert!(picks.windows(2).all(|pair| pair[0] != pair[1]), "{picks:?}");
}

#[test]
fn with_no_eligible_slot_connections_wait_in_a_queue() {
    let Some(mut steered) = steered(Policy::LeastConnections, 2) else {
        return;
    };
    assert!(spread(&mut steered, &[1, 2], 4).len() == 4);
}

#[test]
fn least_connections_starts_a_new_worker_at_the_lowest_count() {
    let Some(mut steered) = steered(Policy::LeastConnections, 2) else {
        return;
    };
    steered.worker_ready(key(1));
    assert_eq!(spread(&mut steered, &[1, 2], 5), vec![1; 5]);
    steered.worker_ready(key(2));
    let picks = spread(&mut steered, &[1, 2], 6);
    assert!(picks.windows(2).all(|pair| pair[0] != pair[1]), "{picks:?}");
}

/// Connects to `address`, and keeps both ends: (the client, the slot that
/// accepted it, the accepted socket).
fn hold(
    address: SocketAddr,
    steered: &mut KernelSteered,
    slots: &[u32],
) -> (TcpStream, u32, socket2::Socket) {
    let client = TcpStream::connect(address).unwrap();
    for &slot in slots {
        let socket = &steered.sockets.slot_sockets(slot).unwrap()[0];
        socket.set_nonblocking(true).unwrap();
        match socket.accept() {
            Ok((accepted, _)) => return (client, slot, accepted),
            Err(err) if err.kind() == ErrorKind::WouldBlock => continue,
            Err(err) => panic!("accept: {err}"),
        }
    }
    panic!("the connection is in no slot's queue")
}

/// Least-connections counted in the kernel over slots 1 and 2, ready,
/// with connections to `address`: the slot holding two open connections
/// gets no new one until they close, and nothing stays counted.
fn assert_counted_in_the_kernel(steered: &mut KernelSteered, address: SocketAddr) {
    let held: Vec<_> = (0..4).map(|_| hold(address, steered, &[1, 2])).collect();
    let (on_one, on_two): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, slot, _)| *slot == 1);
    assert_eq!((on_one.len(), on_two.len()), (2, 2), "to {address}");
    // Slot 2's sockets closed by the worker's side (FIN_WAIT1): slot 1
    // holds 2 open, and every connection that closes at once goes to 2.
    drop(on_two);
    assert_eq!(
        spread_to(address, steered, &[1, 2], 6),
        vec![2; 6],
        "to {address}"
    );
    drop(on_one);
    let picks = spread_to(address, steered, &[1, 2], 6);
    assert!(
        picks.windows(2).all(|pair| pair[0] != pair[1]),
        "to {address}: {picks:?}"
    );
    assert_eq!(steered.groups.open_connections(1), 0);
    assert_eq!(steered.groups.open_connections(2), 0);
}

#[test]
fn least_connections_counts_open_connections_in_the_kernel() {
    let Some(mut steered) = steered(Policy::LeastConnections, 2) else {
        return;
    };
    assert_eq!(
        steered.connection_counts(),
        Some(ConnectionCounts::Kernel),
        "{}",
        steered.counting_note()
    );
    assert!(
        !steered.sockets_for(key(1)).unwrap().report_closes,
        "the kernel counts: library workers send no close reports"
    );
    steered.worker_ready(key(1));
    steered.worker_ready(key(2));
    let address = steered.local_addrs()[0];
    assert_counted_in_the_kernel(&mut steered, address);
}

#[test]
fn the_kernel_counts_ipv6_and_v4_mapped_connections_alike() {
    let Some(mut steered) = steered_on("[::]:0", Policy::LeastConnections, 2) else {
        return;
    };
    steered.worker_ready(key(1));
    steered.worker_ready(key(2));
    let port = steered.local_addrs()[0].port();
    // IPv6, and IPv4 to the dual-stack socket (a v4-mapped peer).
    assert_counted_in_the_kernel(
        &mut steered,
        SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
    );
    assert_counted_in_the_kernel(&mut steered, SocketAddr::from(([127, 0, 0, 1], port)));
}
