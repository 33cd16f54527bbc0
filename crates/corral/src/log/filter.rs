//! `CORRAL_LOG`: which lines corral writes, in tracing's `EnvFilter` syntax
//! (`info`, `warn`, `corral=debug`, …). A value that is not one must not
//! silence every line: `EnvFilter` takes a bare word such as `garbage` for
//! a target name and then shows nothing else. Such a value is refused with
//! a warning, and the default (`info`) applies.

use tracing_subscriber::EnvFilter;

/// The level used when `CORRAL_LOG` is unset or refused.
pub(crate) const DEFAULT: &str = "info";

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The filter for `value` (`CORRAL_LOG`), and the warning to log when the
/// value was refused.
pub(crate) fn parse(value: Option<&str>) -> (EnvFilter, Option<String>) {
    let Some(value) = value.map(str::trim).filter(|value| !value.is_empty()) else {
        return (EnvFilter::new(DEFAULT), None);
    };
    let refused = |why: String| {
        let warning = format!(
            "CORRAL_LOG={value:?} is not a log filter ({why}): using {DEFAULT:?}; \
             give a level (error, warn, info, debug, trace, off) or TARGET=LEVEL"
        );
        (EnvFilter::new(DEFAULT), Some(warning))
    };
    if let Some(word) = value.split(',').map(str::trim).find(|d| !plausible(d)) {
        return refused(format!("{word:?} is neither a level nor TARGET=LEVEL"));
    }
    match EnvFilter::try_new(value) {
        Ok(filter) => (filter, None),
        Err(err) => refused(err.to_string()),
    }
}

/// Whether a directive reads as one: a level, a `TARGET=LEVEL` or span
/// filter, or a bare target that is a Rust path into corral.
fn plausible(directive: &str) -> bool {
    directive.is_empty()
        || LEVELS
            .iter()
            .any(|level| directive.eq_ignore_ascii_case(level))
        || directive.contains(['=', '['])
        || directive.contains("::")
        || directive.starts_with("corral")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_are_taken() {
        for value in [
            "info",
            "WARN",
            "debug,corral=trace",
            "corral",
            "corral::primary=debug",
            "off",
        ] {
            let (_, warning) = parse(Some(value));
            assert_eq!(warning, None, "{value}");
        }
        assert_eq!(parse(None).1, None);
        assert_eq!(parse(Some("  ")).1, None);
    }

    #[test]
    fn a_word_that_is_no_filter_is_refused_with_a_warning() {
        for value in ["garbage", "info,verbose", "corral=loud"] {
            let (filter, warning) = parse(Some(value));
            let warning = warning.unwrap_or_else(|| panic!("{value} was taken"));
            assert!(warning.contains(value), "{warning}");
            assert!(warning.contains("using \"info\""), "{warning}");
            assert_eq!(filter.to_string(), DEFAULT);
        }
    }
}
