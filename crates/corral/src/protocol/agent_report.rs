//! The report corral's Node agent (`primary/node/agent.js`) sends from each
//! Node worker once a second, on Node's channel as one of Node's own
//! messages (its `cmd` starts with `NODE_`, so the app never sees it and
//! corral never relays it):
//!
//! `{"cmd":"NODE_CORRAL_METRICS","requests":N,"inFlight":N,"buckets":[14
//! counts],"sum":S,"lag":S,"lagP99":S,"heap":BYTES}`
//!
//! `requests` and `buckets` are totals since the worker started (the
//! buckets' own counts, in `AGENT_LATENCY_BUCKETS` then `+Inf`), `sum` the
//! seconds they took, `lag` the event loop's mean and `lagP99` its 99th
//! percentile lag over the last period, in seconds, `heap` V8's heap in
//! use. A worker is untrusted: [`parse`] takes only exactly this shape,
//! within the bounds below. Pure, unit-tested.

use serde::Deserialize;
use serde_json::Value;

use crate::control::status::AGENT_LATENCY_BUCKETS;

/// The report's `cmd`.
pub const REPORT_CMD: &str = "NODE_CORRAL_METRICS";
/// Buckets in a report: one per bound, and `+Inf`.
pub const REPORT_BUCKETS: usize = AGENT_LATENCY_BUCKETS.len() + 1;
/// The largest count or byte size taken: JavaScript's largest exact integer.
pub const MAX_REPORTED_COUNT: u64 = (1 << 53) - 1;
/// The most requests in flight taken.
pub const MAX_IN_FLIGHT: u64 = u32::MAX as u64;
/// The most event-loop lag taken, in seconds.
pub const MAX_LAG_SECONDS: f64 = 3600.0;

/// A report as received, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReport {
    pub requests: u64,
    pub in_flight: u64,
    /// Each bucket's own count, the last one `+Inf`'s.
    pub buckets: [u64; REPORT_BUCKETS],
    pub sum_seconds: f64,
    pub lag_seconds: f64,
    pub lag_p99_seconds: f64,
    pub heap_used_bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Wire {
    #[allow(dead_code)]
    cmd: serde::de::IgnoredAny,
    requests: u64,
    in_flight: u64,
    buckets: [u64; REPORT_BUCKETS],
    sum: f64,
    lag: f64,
    lag_p99: f64,
    heap: u64,
}

/// The report in `value`, or why it is refused (one line).
pub fn parse(value: &Value) -> Result<AgentReport, String> {
    // The error may name a field the worker made up: escaped.
    let wire = Wire::deserialize(value).map_err(|err| {
        let err = crate::log::escape_untrusted(&err.to_string()).into_owned();
        format!("a malformed report: {err}")
    })?;
    let counts_fit = wire.requests <= MAX_REPORTED_COUNT && wire.heap <= MAX_REPORTED_COUNT;
    if !counts_fit || wire.in_flight > MAX_IN_FLIGHT {
        return Err("a report with a count out of range".into());
    }
    let bucketed = wire
        .buckets
        .iter()
        .try_fold(0u64, |sum, &count| sum.checked_add(count));
    if bucketed != Some(wire.requests) {
        return Err("a report whose latency buckets do not add up to its requests".into());
    }
    let seconds = |value: f64, most: f64| value.is_finite() && (0.0..=most).contains(&value);
    if !seconds(wire.sum, f64::MAX)
        || !seconds(wire.lag, MAX_LAG_SECONDS)
        || !seconds(wire.lag_p99, MAX_LAG_SECONDS)
    {
        return Err("a report with a duration out of range".into());
    }
    Ok(AgentReport {
        requests: wire.requests,
        in_flight: wire.in_flight,
        buckets: wire.buckets,
        sum_seconds: wire.sum,
        lag_seconds: wire.lag,
        lag_p99_seconds: wire.lag_p99,
        heap_used_bytes: wire.heap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        let mut buckets = vec![0u64; REPORT_BUCKETS];
        buckets[0] = 3;
        buckets[6] = 2;
        json!({"cmd": REPORT_CMD, "requests": 5, "inFlight": 1, "buckets": buckets,
               "sum": 0.11, "lag": 0.002, "lagP99": 0.01, "heap": 5_000_000})
    }

    #[test]
    fn the_agent_s_report_parses() {
        let parsed = parse(&report()).unwrap();
        assert_eq!(parsed.requests, 5);
        assert_eq!(parsed.in_flight, 1);
        assert_eq!(parsed.buckets[6], 2);
        assert_eq!(parsed.heap_used_bytes, 5_000_000);
        assert_eq!(parsed.lag_p99_seconds, 0.01);
    }

    #[test]
    fn anything_else_is_refused_in_one_line() {
        let with = |field: &str, value: Value| {
            let mut report = report();
            report[field] = value;
            report
        };
        let mut unknown = report();
        unknown["extra\nINFO forged"] = json!(1);
        for bad in [
            with("requests", json!(-1)),
            with("requests", json!(6)),
            with("requests", json!("5")),
            with("inFlight", json!(u64::MAX)),
            with("heap", json!(1u64 << 60)),
            with("buckets", json!([5])),
            with("buckets", json!(vec![1u64; REPORT_BUCKETS + 1])),
            with("buckets", json!(vec![u64::MAX; REPORT_BUCKETS])),
            with("sum", json!(-0.5)),
            with("lag", json!(1e9)),
            with("lagP99", json!(null)),
            unknown,
            json!({"cmd": REPORT_CMD}),
            json!("NODE_CORRAL_METRICS"),
        ] {
            let err = parse(&bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
