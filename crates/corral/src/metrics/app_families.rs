//! The app's own metrics, as prom-client's `AggregatorRegistry` makes them
//! for Node's cluster: each worker's registry (`getMetricsAsJSON()`, read
//! here with limits, for a worker is untrusted), merged across workers
//! metric by metric with the metric's `aggregator` (`sum`, the default,
//! `first`, `min`, `max`, `average`, or `omit`), then written in the
//! classic text format or OpenMetrics.
//!
//! Limits per worker's answer ([`Limits`]): at most [`MAX_SERIES`]
//! samples in at most [`MAX_FAMILIES`] metrics, names of at most
//! [`MAX_NAME_BYTES`], help texts of at most [`MAX_HELP_BYTES`], at most
//! [`MAX_LABELS`] labels a sample with values of at most
//! [`MAX_LABEL_VALUE_BYTES`]. An answer over a limit is not used. Names
//! must be Prometheus names (nothing a worker sends can break the text
//! format), a sample's name must start with its metric's, and metrics
//! named `corral_…` are left out: those are corral's own.

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::Value;

use crate::protocol::message::cut_for_log;

/// The most metrics one worker's answer may hold.
pub(crate) const MAX_FAMILIES: usize = 2_000;
/// The most samples one worker's answer may hold.
pub(crate) const MAX_SERIES: usize = 20_000;
/// The longest metric or label name.
pub(crate) const MAX_NAME_BYTES: usize = 256;
/// The longest help text.
pub(crate) const MAX_HELP_BYTES: usize = 1024;
/// The most labels on one sample.
pub(crate) const MAX_LABELS: usize = 32;
/// The longest label value.
pub(crate) const MAX_LABEL_VALUE_BYTES: usize = 1024;
/// The prefix of corral's own metrics, which app metrics may not use.
const OWN_PREFIX: &str = "corral_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aggregator {
    Sum,
    First,
    Min,
    Max,
    Average,
    Omit,
}

/// One metric of one worker, or merged.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub aggregator: Aggregator,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// The family's name, or one with a suffix (`_bucket`, `_sum`, …).
    pub name: String,
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Reads one worker's answer: `metrics`, a list of registries, each a list
/// of metrics. `Err` says why the whole answer is not used; metrics named
/// `corral_…` are left out, and listed in the `Ok`'s second part.
pub(crate) fn read_answer(metrics: &Value) -> Result<(Vec<Family>, Vec<String>), String> {
    let registries = metrics.as_array().ok_or("`metrics` is not a list")?;
    let mut families = Vec::new();
    let mut left_out = Vec::new();
    let mut series = 0usize;
    for metric in registries.iter().flat_map(registry_metrics) {
        if families.len() + left_out.len() >= MAX_FAMILIES {
            return Err(format!("more than {MAX_FAMILIES} metrics"));
        }
        let family = read_family(metric)?;
        series += family.samples.len();
        if series > MAX_SERIES {
            return Err(format!("more than {MAX_SERIES} samples"));
        }
        if family.name.starts_with(OWN_PREFIX) {
            left_out.push(family.name);
        } else {
            families.push(family);
        }
    }
    Ok((families, left_out))
}

fn registry_metrics(registry: &Value) -> &[Value] {
    registry.as_array().map_or(&[], Vec::as_slice)
}

fn read_family(metric: &Value) -> Result<Family, String> {
    let name = metric.get("name").and_then(Value::as_str).unwrap_or("");
    if !is_metric_name(name) {
        return Err(format!("a metric named {:?}", cut(name)));
    }
    let help = metric.get("help").and_then(Value::as_str).unwrap_or("");
    if help.len() > MAX_HELP_BYTES {
        return Err(format!("{name}: a help text over {MAX_HELP_BYTES} bytes"));
    }
    let kind = match metric.get("type").and_then(Value::as_str) {
        Some("counter") => Kind::Counter,
        Some("gauge") => Kind::Gauge,
        Some("histogram") => Kind::Histogram,
        Some("summary") => Kind::Summary,
        other => return Err(format!("{name}: an unknown type {other:?}")),
    };
    let aggregator = match metric.get("aggregator").and_then(Value::as_str) {
        None | Some("sum") => Aggregator::Sum,
        Some("first") => Aggregator::First,
        Some("min") => Aggregator::Min,
        Some("max") => Aggregator::Max,
        Some("average") => Aggregator::Average,
        Some("omit") => Aggregator::Omit,
        Some(other) => return Err(format!("{name}: an unknown aggregator {:?}", cut(other))),
    };
    let values = metric.get("values").and_then(Value::as_array);
    let samples = values
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|value| read_sample(name, value))
        .collect::<Result<_, _>>()?;
    Ok(Family {
        name: name.to_string(),
        help: help.to_string(),
        kind,
        aggregator,
        samples,
    })
}

fn read_sample(family: &str, sample: &Value) -> Result<Sample, String> {
    let name = match sample.get("metricName").and_then(Value::as_str) {
        Some(name) if is_metric_name(name) && name.starts_with(family) => name,
        Some(name) => return Err(format!("{family}: a sample named {:?}", cut(name))),
        None => family,
    };
    let no_labels = serde_json::Map::new();
    let labels = sample
        .get("labels")
        .and_then(Value::as_object)
        .unwrap_or(&no_labels);
    if labels.len() > MAX_LABELS {
        return Err(format!("{family}: a sample with over {MAX_LABELS} labels"));
    }
    let mut read = Vec::with_capacity(labels.len());
    for (label, value) in labels {
        let value = label_value(value)
            .filter(|value| value.len() <= MAX_LABEL_VALUE_BYTES)
            .ok_or_else(|| format!("{family}: a label {:?} too long or not text", cut(label)))?;
        if !is_label_name(label) {
            return Err(format!("{family}: a label named {:?}", cut(label)));
        }
        read.push((label.clone(), value));
    }
    read.sort();
    Ok(Sample {
        name: name.to_string(),
        labels: read,
        // JSON has no NaN: JSON.stringify writes it (and infinities) null.
        value: sample
            .get("value")
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN),
    })
}

/// A label value as JavaScript writes it (`le` and `quantile` are numbers).
fn label_value(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn is_metric_name(name: &str) -> bool {
    is_name(name, |c| c == ':')
}

fn is_label_name(name: &str) -> bool {
    is_name(name, |_| false)
}

/// `[a-zA-Z_(extra)][a-zA-Z0-9_(extra)]*`, at most [`MAX_NAME_BYTES`].
fn is_name(name: &str, extra: impl Fn(char) -> bool) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || extra(c));
    first_ok
        && name.len() <= MAX_NAME_BYTES
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || extra(c))
}

/// Something a worker named, cut for a message.
fn cut(text: &str) -> String {
    cut_for_log(text.to_string())
}

/// Merges the workers' metrics as `AggregatorRegistry.aggregate` does: by
/// name, in the order first seen, with the first worker's help, type and
/// aggregator; each sample (name and labels) merged across workers.
pub(crate) fn aggregate(workers: Vec<Vec<Family>>) -> Vec<Family> {
    let mut merged: Vec<(Family, Vec<Vec<Sample>>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for family in workers.into_iter().flatten() {
        match index.get(&family.name) {
            Some(&at) => merged[at].1.push(family.samples),
            None => {
                index.insert(family.name.clone(), merged.len());
                let Family { samples, .. } = &family;
                let first = vec![samples.clone()];
                merged.push((family, first));
            }
        }
    }
    merged
        .into_iter()
        .filter(|(family, _)| family.aggregator != Aggregator::Omit)
        .map(|(family, samples)| Family {
            samples: merge_samples(family.aggregator, samples),
            ..family
        })
        .collect()
}

fn merge_samples(aggregator: Aggregator, workers: Vec<Vec<Sample>>) -> Vec<Sample> {
    let mut merged: Vec<(Sample, Vec<f64>)> = Vec::new();
    let mut index: HashMap<(String, Vec<(String, String)>), usize> = HashMap::new();
    for sample in workers.into_iter().flatten() {
        let key = (sample.name.clone(), sample.labels.clone());
        match index.get(&key) {
            Some(&at) => merged[at].1.push(sample.value),
            None => {
                index.insert(key, merged.len());
                let value = sample.value;
                merged.push((sample, vec![value]));
            }
        }
    }
    merged
        .into_iter()
        .map(|(sample, values)| Sample {
            value: combine(aggregator, &values),
            ..sample
        })
        .collect()
}

/// prom-client's aggregator functions over one sample's values.
fn combine(aggregator: Aggregator, values: &[f64]) -> f64 {
    let sum = || values.iter().sum::<f64>();
    match aggregator {
        Aggregator::Sum | Aggregator::Omit => sum(),
        Aggregator::First => values.first().copied().unwrap_or(f64::NAN),
        Aggregator::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        Aggregator::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Aggregator::Average => sum() / values.len() as f64,
    }
}

/// The text of `families`: Prometheus' classic format, or OpenMetrics
/// (without its `# EOF`), where a counter's family is named without
/// `_total` and its samples with it.
pub(crate) fn render(families: &[Family], openmetrics: bool) -> String {
    let mut out = String::new();
    for family in families {
        let counter = family.kind == Kind::Counter;
        let name = match family.name.strip_suffix("_total") {
            Some(stem) if openmetrics && counter => stem,
            _ => &family.name,
        };
        let help = escape(&family.help, openmetrics);
        let kind = kind_name(family.kind);
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for sample in &family.samples {
            let sample_name = if openmetrics && counter && sample.name == family.name {
                format!("{name}_total")
            } else {
                sample.name.clone()
            };
            out.push_str(&sample_name);
            write_labels(&mut out, &sample.labels);
            let _ = writeln!(out, " {}", number(sample.value));
        }
    }
    out
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
        Kind::Summary => "summary",
    }
}

fn write_labels(out: &mut String, labels: &[(String, String)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (at, (label, value)) in labels.iter().enumerate() {
        if at > 0 {
            out.push(',');
        }
        let _ = write!(out, "{label}=\"{}\"", escape(value, true));
    }
    out.push('}');
}

/// Escapes `\` and newlines, and `"` where asked (label values, and help
/// texts in OpenMetrics).
fn escape(text: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn worker(requests: f64, lag: f64) -> Vec<Family> {
        let answer = json!([[
            {"name": "http_requests_total", "help": "Requests.", "type": "counter",
             "aggregator": "sum",
             "values": [{"value": requests, "labels": {"route": "/"}}]},
            {"name": "nodejs_eventloop_lag_seconds", "help": "Lag.", "type": "gauge",
             "aggregator": "average", "values": [{"value": lag, "labels": {}}]},
            {"name": "process_start_time_seconds", "help": "Start.", "type": "gauge",
             "aggregator": "omit", "values": [{"value": 1, "labels": {}}]},
            {"name": "latency", "help": "Latency.", "type": "histogram", "aggregator": "sum",
             "values": [
                {"labels": {"le": 0.1}, "value": 1, "metricName": "latency_bucket"},
                {"labels": {"le": "+Inf"}, "value": 2, "metricName": "latency_bucket"},
                {"labels": {}, "value": 0.3, "metricName": "latency_sum"},
                {"labels": {}, "value": 2, "metricName": "latency_count"}]}
        ]]);
        read_answer(&answer).expect("a good answer").0
    }

    #[test]
    fn workers_merge_by_each_metrics_aggregator() {
        let merged = aggregate(vec![worker(3.0, 0.25), worker(4.0, 0.75)]);
        let names: Vec<&str> = merged.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "http_requests_total",
                "nodejs_eventloop_lag_seconds",
                "latency"
            ]
        );
        assert_eq!(merged[0].samples[0].value, 7.0);
        assert_eq!(merged[1].samples[0].value, 0.5);
        let buckets: Vec<f64> = merged[2].samples.iter().map(|s| s.value).collect();
        assert_eq!(buckets, [2.0, 4.0, 0.6, 4.0]);
        assert_eq!(merged[2].samples[0].labels, [("le".into(), "0.1".into())]);
    }

    #[test]
    fn min_max_and_first_are_prom_clients() {
        assert_eq!(combine(Aggregator::Min, &[3.0, 1.0, 2.0]), 1.0);
        assert_eq!(combine(Aggregator::Max, &[3.0, 1.0, 2.0]), 3.0);
        assert_eq!(combine(Aggregator::First, &[3.0, 1.0]), 3.0);
    }

    #[test]
    fn counters_are_renamed_in_openmetrics_only() {
        let merged = aggregate(vec![worker(3.0, 0.25)]);
        let classic = render(&merged[..1], false);
        assert_eq!(
            classic,
            "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n\
             http_requests_total{route=\"/\"} 3\n"
        );
        let openmetrics = render(&merged[..1], true);
        assert!(openmetrics.starts_with("# HELP http_requests Requests.\n"));
        assert!(openmetrics.ends_with("http_requests_total{route=\"/\"} 3\n"));
    }

    #[test]
    fn what_a_worker_writes_cannot_break_the_text() {
        let answer = |name: &str, label: &str, value: &str| {
            json!([[{"name": name, "help": "a\nb\\", "type": "gauge",
                     "values": [{"value": null, "labels": {label: value}}]}]])
        };
        let (families, _) = read_answer(&answer("g", "l", "x\"\n")).expect("fine");
        assert_eq!(
            render(&families, false),
            "# HELP g a\\nb\\\\\n# TYPE g gauge\ng{l=\"x\\\"\\n\"} NaN\n"
        );
        assert!(read_answer(&answer("g\n# x", "l", "v")).is_err());
        assert!(read_answer(&answer("g", "l=\"", "v")).is_err());
        let long = "v".repeat(MAX_LABEL_VALUE_BYTES + 1);
        assert!(read_answer(&answer("g", "l", &long)).is_err());
        let sample = json!([[{"name": "g", "type": "gauge",
            "values": [{"value": 1, "metricName": "corral_workers"}]}]]);
        assert!(read_answer(&sample).is_err());
    }

    #[test]
    fn corrals_own_names_are_left_out_and_too_many_series_refused() {
        let own = json!([[{"name": "corral_workers", "type": "gauge", "values": []}]]);
        let (families, left_out) = read_answer(&own).expect("fine");
        assert!(families.is_empty());
        assert_eq!(left_out, ["corral_workers"]);
        let values: Vec<Value> = (0..=MAX_SERIES)
            .map(|n| json!({"value": 1, "labels": {"n": n}}))
            .collect();
        let many = json!([[{"name": "g", "type": "gauge", "values": values}]]);
        assert!(read_answer(&many).unwrap_err().contains("samples"));
    }
}
