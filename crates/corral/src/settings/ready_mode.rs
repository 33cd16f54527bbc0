//! When a COMMAND worker counts as ready (`--ready`). Library workers say so
//! themselves; a program in another language may not, so the user picks
//! how corral decides. Readiness gates a rolling reload (the old worker
//! stops only once its replacement is ready) and, under the hand-off
//! policies, whether a worker gets connections.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;

/// How long an `auto` reload replacement must stay up to count as ready.
const AUTO_SETTLE: Duration = Duration::from_secs(1);

/// How a COMMAND worker's readiness is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadyMode {
    /// Ready when it says so; otherwise at once on a first start (it holds
    /// bound sockets, so the kernel queues its connections) and after 1 s
    /// alive as a reload's replacement. Under a hand-off policy it must say so.
    #[default]
    Auto,
    /// Ready only when it sends `{"corral":"ready"}` (or `process.send('ready')`).
    Message,
    /// Ready after running this long (or when it says so, if sooner).
    Delay(Duration),
}

impl ReadyMode {
    /// For a COMMAND worker: after how long it counts as ready without
    /// saying so (`Some(ZERO)`: at once), or `None` when it must say so.
    pub(crate) fn settle(self, replacement: bool, hands_off: bool) -> Option<Duration> {
        match self {
            ReadyMode::Auto if hands_off => None,
            ReadyMode::Auto if replacement => Some(AUTO_SETTLE),
            ReadyMode::Auto => Some(Duration::ZERO),
            ReadyMode::Message => None,
            ReadyMode::Delay(delay) => Some(delay),
        }
    }
}

impl FromStr for ReadyMode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let invalid = || {
            Error::Config(format!(
                "--ready {text:?}: use auto, message or delay:SECONDS (as delay:2.5)"
            ))
        };
        match text {
            "auto" => Ok(ReadyMode::Auto),
            "message" => Ok(ReadyMode::Message),
            _ => {
                let seconds: f64 = text
                    .strip_prefix("delay:")
                    .and_then(|value| value.parse().ok())
                    .ok_or_else(invalid)?;
                Duration::try_from_secs_f64(seconds)
                    .map(ReadyMode::Delay)
                    .map_err(|_| invalid())
            }
        }
    }
}

impl fmt::Display for ReadyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyMode::Auto => f.write_str("auto"),
            ReadyMode::Message => f.write_str("message"),
            ReadyMode::Delay(delay) => write!(f, "delay:{}", delay.as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_decide() {
        assert_eq!("auto".parse::<ReadyMode>().unwrap(), ReadyMode::Auto);
        assert_eq!("message".parse::<ReadyMode>().unwrap(), ReadyMode::Message);
        let delay: ReadyMode = "delay:2.5".parse().unwrap();
        assert_eq!(delay, ReadyMode::Delay(Duration::from_millis(2500)));
        for bad in ["soon", "delay:", "delay:-1", "delay:x"] {
            assert!(bad.parse::<ReadyMode>().is_err(), "{bad}");
        }
        assert_eq!(ReadyMode::Auto.settle(false, false), Some(Duration::ZERO));
        assert_eq!(ReadyMode::Auto.settle(true, false), Some(AUTO_SETTLE));
        assert_eq!(ReadyMode::Auto.settle(false, true), None);
        assert_eq!(ReadyMode::Message.settle(true, false), None);
        assert_eq!(delay.settle(false, true), Some(Duration::from_millis(2500)));
    }
}
