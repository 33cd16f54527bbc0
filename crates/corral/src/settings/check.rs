//! The bounds of each setting and how settings must agree, checked before
//! anything starts: a refusal names the setting by its flag.

use std::time::Duration;

use super::Configuration;
use super::ReadyMode;
use crate::error::Error;
use crate::limits::{MAX_WORKERS, check_duration, check_message_size, check_requests};

impl Configuration {
    /// Refuses what no cluster could run with (what needs resolving, as
    /// addresses and users, is checked when it is resolved).
    pub(crate) fn check(&self) -> Result<(), Error> {
        let (reloadable, fixed) = (&self.reloadable, &self.fixed);
        if reloadable.workers == 0 || reloadable.workers > MAX_WORKERS {
            return Err(Error::Config(format!(
                "the number of workers must be from 1 to {MAX_WORKERS}, not {}",
                reloadable.workers
            )));
        }
        if reloadable
            .watchdog
            .is_some_and(|timeout| timeout < Duration::from_millis(100))
        {
            return Err(Error::Config(
                "the watchdog timeout must be at least 0.1 s".into(),
            ));
        }
        self.check_limits()?;
        let backoff = &reloadable.backoff;
        if backoff.stable_after < backoff.min_uptime {
            return Err(Error::Config(format!(
                "the stable run (--stable-after) must be at least {} s, as long as a \
                 worker must run to count as started",
                backoff.min_uptime.as_secs_f64()
            )));
        }
        if backoff.cap < backoff.initial {
            return Err(Error::Config(format!(
                "the longest restart delay (--max-restart-delay) must be at least {} s, \
                 the first delay",
                backoff.initial.as_secs_f64()
            )));
        }
        if reloadable.max_surge == 0 {
            return Err(Error::Config("the reload surge must be 1 or more".into()));
        }
        if fixed.worker_threads == Some(0) {
            return Err(Error::Config("worker threads must be 1 or more".into()));
        }
        if fixed.backlog == 0 || fixed.backlog > i32::MAX as u32 {
            return Err(Error::Config(format!(
                "the backlog must be a positive number, not {}",
                fixed.backlog
            )));
        }
        for (key, value) in &reloadable.env {
            crate::protocol::env::check_variable(key, value)?;
        }
        if let Some(expression) = &fixed.reload_at {
            super::schedule::Schedule::parse(expression)?;
        }
        Ok(())
    }

    /// Refuses values past [`crate::limits`], naming the setting.
    fn check_limits(&self) -> Result<(), Error> {
        let reloadable = &self.reloadable;
        check_duration("the grace period (--grace)", reloadable.grace)?;
        check_duration("the drain delay (--drain-delay)", reloadable.drain_delay)?;
        check_duration(
            "the WebSocket close delay (--ws-close-after)",
            reloadable.ws_close_after,
        )?;
        check_duration(
            "the ready timeout (--ready-timeout)",
            reloadable.ready_timeout,
        )?;
        check_duration(
            "the stable run (--stable-after)",
            reloadable.backoff.stable_after,
        )?;
        check_duration(
            "the longest restart delay (--max-restart-delay)",
            reloadable.backoff.cap,
        )?;
        if let Some(timeout) = reloadable.watchdog {
            check_duration("the watchdog timeout (--timeout)", timeout)?;
        }
        if let ReadyMode::Delay(delay) = reloadable.ready {
            check_duration("the ready delay (--ready delay:SECONDS)", delay)?;
        }
        check_message_size(self.fixed.max_message_size as u64)?;
        if let Some(max) = reloadable.max_requests {
            check_requests("--max-requests", max)?;
            check_requests("--max-requests-jitter", reloadable.max_requests_jitter)?;
        }
        Ok(())
    }
}
