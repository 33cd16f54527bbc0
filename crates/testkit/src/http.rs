//! A minimal HTTP/1.1 client over loopback, and the demo worker's
//! greeting.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use crate::PATIENCE;

/// An HTTP response: status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` on 127.0.0.1:`port` over a new connection (`Connection: close`).
pub fn http_get(port: u16, path: &str) -> io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {text:?}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response { status, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A kept-alive HTTP/1.1 connection, held open until dropped.
pub struct KeepAlive {
    stream: TcpStream,
    /// Who answered the request that opened it.
    pub hello: Hello,
}

impl KeepAlive {
    /// Twenty connections held open, split evenly between workers 1 and
    /// 2 (as `least-connections` spreads them; the test fails otherwise):
    /// (those on worker 1, those on worker 2).
    pub fn twenty_split_evenly(port: u16) -> (Vec<KeepAlive>, Vec<KeepAlive>) {
        let held: Vec<KeepAlive> = (0..20).map(|_| KeepAlive::open(port).unwrap()).collect();
        let (on_one, on_two): (Vec<KeepAlive>, Vec<KeepAlive>) =
            held.into_iter().partition(|conn| conn.hello.id == 1);
        assert_eq!(
            (on_one.len(), on_two.len()),
            (10, 10),
            "held connections spread evenly"
        );
        (on_one, on_two)
    }

    /// Connects to 127.0.0.1:`port`, sends `GET /` and reads the answer,
    /// keeping the connection open.
    pub fn open(port: u16) -> io::Result<Self> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(PATIENCE))?;
        write!(stream, "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
        let body = read_sized_response(&mut stream)?;
        let hello =
            parse_hello(&body).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, body))?;
        Ok(KeepAlive { stream, hello })
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads one response with a `Content-Length` from `stream`; returns its body.
fn read_sized_response(stream: &mut TcpStream) -> io::Result<String> {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Who answered, parsed from `Hello from worker <id> (pid <pid>)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hello {
    pub id: u32,
    pub pid: u32,
}

/// `GET /` on 127.0.0.1:`port` from the source address `from` (another
/// loopback address, `curl --interface`): the body. Fails the test when
/// curl does.
pub fn get_from(from: &str, port: u16) -> String {
    let output = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["--interface", from])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl from {from}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Parses the demo worker's greeting.
pub fn parse_hello(body: &str) -> Option<Hello> {
    let rest = body.strip_prefix("Hello from worker ")?;
    let (id, rest) = rest.split_once(" (pid ")?;
    let pid = rest.strip_suffix(")\n")?;
    Some(Hello {
        id: id.parse().ok()?,
        pid: pid.parse().ok()?,
    })
}

/// `GET /` and parse who answered; panics with the reason otherwise.
pub fn hello(port: u16) -> Hello {
    let response = http_get(port, "/").unwrap_or_else(|err| panic!("GET / failed: {err}"));
    assert_eq!(response.status, 200, "{response:?}");
    parse_hello(&response.body).unwrap_or_else(|| panic!("not a greeting: {:?}", response.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_and_responses_parse() {
        assert_eq!(
            parse_hello("Hello from worker 2 (pid 77)\n"),
            Some(Hello { id: 2, pid: 77 })
        );
        assert_eq!(parse_hello("Hello from worker 2 (pid 77)"), None);
        let response = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((response.status, response.body.as_str()), (200, "hello"));
    }
}
