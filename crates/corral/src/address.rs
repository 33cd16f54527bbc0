//! Listen addresses as users write them (`HOST:PORT`, `[::1]:PORT`, `PORT`,
//! `systemd:NAME` for a socket systemd passed) and their resolution to
//! socket addresses before anything is bound.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::error::Error;

/// One `--listen` value. Port 0 asks the kernel for a free port; the bound
/// address is reported once the cluster has bound it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    text: String,
    host: String,
    port: u16,
    /// `systemd:NAME`: the socket systemd passed under this name.
    activated: Option<String>,
}

/// The prefix of a listen address that names a socket passed by systemd.
const SYSTEMD_PREFIX: &str = "systemd:";

impl ListenAddr {
    /// Resolves the host name; the first address it resolves to is used.
    /// `systemd:NAME` resolves to the address of the socket systemd passed
    /// under that name.
    pub fn resolve(&self) -> Result<SocketAddr, Error> {
        if let Some(name) = &self.activated {
            return crate::balance::activation::address_named(name);
        }
        let invalid = |reason: String| Error::InvalidAddress {
            address: self.text.clone(),
            reason,
        };
        let mut candidates = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|err| invalid(format!("cannot resolve host {:?}: {err}", self.host)))?;
        let address = candidates
            .next()
            .ok_or_else(|| invalid(format!("host {:?} resolves to no address", self.host)))?;
        match not_listenable(address.ip()) {
            Some(reason) => Err(invalid(reason.to_string())),
            None => Ok(address),
        }
    }
}

/// Why no stream socket can listen on `ip`, if none can: a multicast or
/// broadcast address binds but never accepts a connection.
fn not_listenable(ip: IpAddr) -> Option<&'static str> {
    // `[::ffff:224.0.0.1]` is the IPv4 address it maps.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_multicast() => Some(
            "a multicast address (224.0.0.0/4) cannot accept connections: listen on a unicast \
             address, as 0.0.0.0:PORT or 127.0.0.1:PORT",
        ),
        IpAddr::V4(v4) if v4.is_broadcast() => Some(
            "the broadcast address cannot accept connections: listen on a unicast address, as \
             0.0.0.0:PORT or 127.0.0.1:PORT",
        ),
        IpAddr::V6(v6) if v6.is_multicast() => Some(
            "a multicast address (ff00::/8) cannot accept connections: listen on a unicast \
             address, as [::]:PORT or [::1]:PORT",
        ),
        _ => None,
    }
}

impl FromStr for ListenAddr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidAddress {
            address: text.to_string(),
            reason: reason.to_string(),
        };
        let text = text.trim();
        if let Some(name) = text.strip_prefix(SYSTEMD_PREFIX) {
            if name.is_empty() || name.contains(':') {
                return Err(invalid(
                    "write systemd:NAME, NAME being the socket's FileDescriptorName=",
                ));
            }
            return Ok(ListenAddr {
                text: text.to_string(),
                host: String::new(),
                port: 0,
                activated: Some(name.to_string()),
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, port),
            // A bare port listens on every IPv4 interface, as `listen(PORT)`.
            None if text.bytes().all(|b| b.is_ascii_digit()) => ("0.0.0.0", text),
            None => {
                return Err(invalid(&format!(
                    "the port is missing: write HOST:PORT, as in {text}:8000"
                )));
            }
        };
        let host = match host.strip_prefix('[') {
            Some(inner) => inner
                .strip_suffix(']')
                .ok_or_else(|| invalid("an IPv6 host needs a closing ']', as in [::1]:8000"))?,
            None if host.contains(':') => {
                return Err(invalid(
                    "write an IPv6 host in brackets with a port, as in [::1]:8000",
                ));
            }
            None => host,
        };
        if host.is_empty() {
            return Err(invalid(
                "the host is empty: write HOST:PORT, as in 127.0.0.1:8000",
            ));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
        Ok(ListenAddr {
            text: text.to_string(),
            host: host.to_string(),
            port,
            activated: None,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(text: &str) -> SocketAddr {
        text.parse::<ListenAddr>().unwrap().resolve().unwrap()
    }

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(
            resolved("127.0.0.1:8000"),
            "127.0.0.1:8000".parse().unwrap()
        );
        assert_eq!(resolved("[::1]:0"), "[::1]:0".parse().unwrap());
        assert_eq!(resolved("9000"), "0.0.0.0:9000".parse().unwrap());
        assert_eq!(resolved("localhost:80").port(), 80);
    }

    #[test]
    fn rejects_malformed_addresses_with_a_reason() {
        for bad in [
            "127.0.0.1:http",
            "::1:80",
            "[::1:80",
            ":80",
            "1.2.3.4:70000",
            "systemd:",
            "localhost",
        ] {
            let err = bad.parse::<ListenAddr>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn a_systemd_name_needs_sockets_from_systemd() {
        let addr: ListenAddr = "systemd:web".parse().unwrap();
        let err = addr.resolve().unwrap_err().to_string();
        assert!(
            err.contains("systemd:web") && err.contains("LISTEN_FDS"),
            "{err}"
        );
    }

    #[test]
    fn multicast_and_broadcast_addresses_are_refused() {
        for bad in [
            "224.0.0.1:0",
            "239.255.255.250:1900",
            "255.255.255.255:0",
            "[ff02::1]:0",
            "[ff05::2]:80",
            "[::ffff:224.0.0.1]:0",
        ] {
            let addr: ListenAddr = bad.parse().unwrap();
            let err = addr.resolve().unwrap_err().to_string();
            assert!(
                err.contains(bad) && err.contains("cannot accept connections"),
                "{err}"
            );
        }
        for good in [
            "223.255.255.255:0",
            "192.168.1.255:0",
            "[fe00::1]:0",
            "0.0.0.0:0",
        ] {
            assert!(
                good.parse::<ListenAddr>().unwrap().resolve().is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn a_host_without_a_port_says_the_port_is_missing() {
        let err = "localhost".parse::<ListenAddr>().unwrap_err().to_string();
        assert!(err.contains("the port is missing"), "{err}");
    }

    #[test]
    fn unresolvable_host_is_an_error_naming_it() {
        let addr: ListenAddr = "no-such-host.invalid:80".parse().unwrap();
        let err = addr.resolve().unwrap_err().to_string();
        assert!(err.contains("no-such-host.invalid"), "{err}");
    }
}
