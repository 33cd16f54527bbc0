//! The `sticky` policy on the hand-off path: each connection goes to the
//! slot its client's source address picks in the lookup table of
//! `sticky.rs`, over the slots whose workers can take connections now. A
//! client whose worker is restarting goes where the table over the
//! remaining slots sends it, and comes back when its worker does.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use socket2::SockRef;

use super::pick::{Candidates, Pick};
use super::sticky;

/// Tables kept for the slot sets seen last: a worker whose channel fills
/// and drains toggles the eligible set, and each set's table is built once.
const RECENT_TABLES: usize = 4;

/// The lookup tables of the eligible slot sets seen last, most recent
/// first: a table is built when the eligible set changes, not per
/// connection.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    recent: VecDeque<(Vec<u32>, Vec<u32>)>,
    /// The eligible set being looked up (kept to reuse its allocation).
    eligible: Vec<u32>,
}

impl Tables {
    /// The slot for a client at `client` among the `eligible` slots.
    pub(crate) fn slot(
        &mut self,
        eligible: impl Iterator<Item = u32>,
        client: IpAddr,
    ) -> Option<u32> {
        self.eligible.clear();
        self.eligible.extend(eligible);
        self.eligible.sort_unstable();
        self.eligible.dedup();
        let table = self.table_of_eligible();
        sticky::pick(table, client)
    }

    fn table_of_eligible(&mut self) -> &[u32] {
        match self
            .recent
            .iter()
            .position(|(slots, _)| *slots == self.eligible)
        {
            Some(0) => {}
            Some(index) => {
                let found = self.recent.remove(index).expect("found above");
                self.recent.push_front(found);
            }
            None => {
                let table = sticky::table(&self.eligible);
                self.recent.push_front((self.eligible.clone(), table));
                self.recent.truncate(RECENT_TABLES);
            }
        }
        &self.recent[0].1
    }
}

/// The IP address a connection comes from; `None` for a Unix socket or a
/// connection already reset.
pub(crate) fn client_address(connection: BorrowedFd<'_>) -> Option<IpAddr> {
    let peer = SockRef::from(&connection).peer_addr().ok()?;
    peer.as_socket().map(|address| address.ip())
}

#[derive(Debug, Default)]
pub(crate) struct Sticky {
    tables: Tables,
}

impl Sticky {
    fn pick_for(&mut self, targets: &dyn Candidates, client: Option<IpAddr>) -> Option<usize> {
        let accepting = || (0..targets.count()).filter(|&index| targets.accepting(index));
        // Without an address (the client already gone) any worker will do.
        let Some(client) = client else {
            return accepting().next();
        };
        let slot = self
            .tables
            .slot(accepting().map(|index| targets.slot(index)), client)?;
        accepting().find(|&index| targets.slot(index) == slot)
    }
}

impl Pick for Sticky {
    fn pick(&mut self, targets: &dyn Candidates, connection: BorrowedFd<'_>) -> Option<usize> {
        self.pick_for(targets, client_address(connection))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr, TcpListener};
    use std::os::fd::AsFd;

    use super::*;

    fn address(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    /// The slot of each of 200 clients.
    fn slots_of_clients(strategy: &mut Sticky, targets: &Vec<(bool, u64)>) -> Vec<Option<u32>> {
        (0..200)
            .map(|last| {
                strategy
                    .pick_for(targets, Some(address(last)))
                    .map(|index| targets.slot(index))
            })
            .collect()
    }

    #[test]
    fn a_client_keeps_its_worker_and_clients_spread() {
        let mut strategy = Sticky::default();
        let targets = vec![(true, 0), (true, 0), (true, 0)];
        let first = slots_of_clients(&mut strategy, &targets);
        assert_eq!(slots_of_clients(&mut strategy, &targets), first);
        for slot in 1..=3 {
            let share = first.iter().filter(|&&s| s == Some(slot)).count();
            assert!(share > 40, "slot {slot} has {share} of 200 clients");
        }
        // Open connections do not matter to sticky.
        let busy = vec![(true, 500), (true, 0), (true, 0)];
        assert_eq!(slots_of_clients(&mut strategy, &busy), first);
    }

    #[test]
    fn clients_of_a_restarting_worker_go_elsewhere_and_come_back() {
        let mut strategy = Sticky::default();
        let all = vec![(true, 0), (true, 0), (true, 0)];
        let before = slots_of_clients(&mut strategy, &all);
        let restarting = vec![(true, 0), (false, 0), (true, 0)];
        let during = slots_of_clients(&mut strategy, &restarting);
        assert!(during.iter().all(|slot| *slot != Some(2)));
        // Maglev is near-minimal: the others' clients stay but for a few
        // (with three slots, 1% of the others' entries move).
        let others_moved = before
            .iter()
            .zip(&during)
            .filter(|(was, now)| **was != Some(2) && was != now)
            .count();
        assert!(others_moved <= 5, "{others_moved} of 200 clients moved");
        assert_eq!(slots_of_clients(&mut strategy, &all), before);
    }

    #[test]
    fn a_table_is_kept_per_recent_slot_set() {
        let mut tables = Tables::default();
        let client = address(7);
        let of_two = tables.slot([2, 1].into_iter(), client);
        tables.slot([1].into_iter(), client);
        assert_eq!(tables.recent.len(), 2);
        assert_eq!(tables.slot([1, 2].into_iter(), client), of_two);
        assert_eq!(tables.recent.len(), 2, "the table of {{1, 2}} is reused");
        for slots in 3..10 {
            tables.slot(1..slots, client);
        }
        assert_eq!(tables.recent.len(), RECENT_TABLES);
    }

    #[test]
    fn nobody_accepting_is_no_pick_and_no_address_is_any_worker() {
        let mut strategy = Sticky::default();
        let none = vec![(false, 0), (false, 0)];
        assert_eq!(strategy.pick_for(&none, Some(address(1))), None);
        assert_eq!(strategy.pick_for(&none, None), None);
        assert_eq!(
            strategy.pick_for(&vec![(false, 0), (true, 0)], None),
            Some(1)
        );
    }

    #[test]
    fn the_client_address_is_the_connection_source() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let source: SocketAddr = "127.0.0.2:0".parse().unwrap();
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a socket");
        client.bind(&source.into()).expect("binds to 127.0.0.2");
        client
            .connect(&listener.local_addr().unwrap().into())
            .expect("connects");
        let (accepted, _) = listener.accept().expect("accepts");
        assert_eq!(client_address(accepted.as_fd()), Some(source.ip()));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(client_address(file.as_fd()), None);
    }
}
