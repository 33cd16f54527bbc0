//! `--reload-at`: a cron expression (5 fields, or 6 with seconds first;
//! `@daily` and the other nicknames), read by the `croner` crate, in UTC.
//! The supervisor sleeps until its next time and then reloads.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::error::Error;

/// A parsed `--reload-at`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schedule(Cron);

impl Schedule {
    pub(crate) fn parse(expression: &str) -> Result<Schedule, Error> {
        Schedule::read(expression)
            .map_err(|why| Error::Config(format!("--reload-at {expression:?}: {why}")))
    }

    /// The schedule, or why `expression` is none (without the flag).
    pub(crate) fn read(expression: &str) -> Result<Schedule, String> {
        CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map(Schedule)
            .map_err(|err| {
                format!(
                    "not a cron expression ({err}): use 5 fields \"MIN HOUR DAY MONTH \
                     WEEKDAY\" (UTC), 6 with seconds first, or @daily"
                )
            })
    }

    /// The first time strictly after `now`, if any.
    pub(crate) fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_next_occurrence(&now, false).ok()
    }

    /// How long from `now` until the next time, if any.
    pub(crate) fn wait_from(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, Duration)> {
        let next = self.next_after(now)?;
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        Some((next, wait))
    }
}

/// A time as status and logs show it: RFC 3339, UTC, whole seconds.
pub(crate) fn shown(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_fields_and_nicknames() {
        let now: DateTime<Utc> = "2026-01-01T10:00:30Z".parse().unwrap();
        let every_second = Schedule::parse("* * * * * *").unwrap();
        assert_eq!(
            shown(every_second.next_after(now).unwrap()),
            "2026-01-01T10:00:31Z"
        );
        let hourly = Schedule::parse("0 * * * *").unwrap();
        assert_eq!(
            shown(hourly.next_after(now).unwrap()),
            "2026-01-01T11:00:00Z"
        );
        let daily = Schedule::parse("@daily").unwrap();
        assert_eq!(
            shown(daily.next_after(now).unwrap()),
            "2026-01-02T00:00:00Z"
        );
        let err = Schedule::parse("every day").unwrap_err().to_string();
        assert!(
            err.contains("--reload-at \"every day\": not a cron expression"),
            "{err}"
        );
    }
}
