//! A blocking client of the control socket, what the `corral` commands use:
//! connect, send requests, read answers and streamed lines. Other programs
//! speak the socket's documented JSON protocol (the README's "The
//! protocol"); this client is reachable as `corral::cli_support::client`,
//! outside the supported API.
//!
//! ```no_run
//! # fn main() -> Result<(), corral::cli_support::client::ClientError> {
//! use corral::cli_support::{client::Client, path::default_socket};
//! let mut client = Client::connect(&default_socket("api"))?;
//! let status = client.status()?;
//! println!("{} workers", status.workers.len());
//! # Ok(()) }
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::protocol::{Command, Request, Response, Streamed};
use super::status::Status;

/// How long a client waits to connect and for an answer that should come
/// at once (everything but a waited-for reload and streams).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong talking to a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No cluster answers at this path.
    #[error("no cluster answers at {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The cluster answered with an error.
    #[error("{message}")]
    Refused {
        message: String,
        /// The result that came with the error, if any (an aborted
        /// reload's outcome).
        result: Option<Value>,
    },
    /// The connection failed or timed out.
    #[error("the control connection failed")]
    Io(#[from] io::Error),
    /// The cluster closed the connection (it stopped).
    #[error("the cluster closed the connection")]
    Closed,
    /// The answer is not what the protocol says.
    #[error("unexpected answer from the cluster: {0}")]
    Protocol(String),
}

fn refusal(response: Response) -> ClientError {
    ClientError::Refused {
        message: response.error.unwrap_or_else(|| "failed".into()),
        result: response.result,
    }
}

/// A connection to one cluster's control socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to the control socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let connect_error = |source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(connect_error)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    /// How long to wait for each answer or streamed line (`None`: for ever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.reader.get_ref().set_read_timeout(timeout)?;
        Ok(())
    }

    /// Sends `command` and returns the result of its response.
    pub fn request(&mut self, command: Command) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request {
            id: id.into(),
            command,
        };
        let mut line =
            serde_json::to_vec(&request).map_err(|err| ClientError::Protocol(err.to_string()))?;
        line.push(b'\n');
        if let Err(err) = self.writer.write_all(&line) {
            // A refused client (another user, too many connections) is
            // told why and cut off, maybe before its request went out:
            // the reason is still there to read.
            return match self.read_line::<Response>() {
                Ok(response) if !response.ok => Err(refusal(response)),
                _ => Err(err.into()),
            };
        }
        let response: Response = self.read_line()?;
        if response.id != id && !response.id.is_null() {
            return Err(ClientError::Protocol(format!(
                "answer to request {} where {id} was expected",
                response.id
            )));
        }
        if !response.ok {
            return Err(refusal(response));
        }
        Ok(response.result.unwrap_or(Value::Null))
    }

    /// The cluster's status.
    pub fn status(&mut self) -> Result<Status, ClientError> {
        let result = self.request(Command::Status)?;
        serde_json::from_value(result).map_err(|err| ClientError::Protocol(err.to_string()))
    }

    /// The next line of a stream (`events`, `logs` with `follow`).
    pub fn next_streamed(&mut self) -> Result<Streamed, ClientError> {
        self.read_line()
    }

    /// Waits until the cluster closes the connection (after `stop`).
    pub fn wait_closed(&mut self) -> Result<(), ClientError> {
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
    }

    fn read_line<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Closed);
        }
        serde_json::from_str(&line)
            .map_err(|err| ClientError::Protocol(format!("{err}: {}", line.trim_end())))
    }
}
