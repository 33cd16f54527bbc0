//! What a cluster name (`--name`) may be. It goes into every log line and,
//! with the default control socket, into a file name: the rules for both
//! are here.

use crate::error::Error;

/// Refuses a cluster name that would put control characters (a newline,
/// an escape sequence) into every log line and file name that carries it.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if name.chars().any(char::is_control) {
        return Err(Error::Config(format!(
            "the cluster name (--name) {name:?} contains control characters: use letters, \
             digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// A cluster name that names its control socket file must make one file
/// name.
pub(crate) fn check_file_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
        return Err(Error::Config(format!(
            "the cluster name {name:?} cannot name a control socket file: use --name with \
             letters, digits, '-' or '_' (or --control PATH, or --control none)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_one_file_name_are_refused() {
        for bad in ["", ".hidden", "a/b", "nul\0"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        for good in ["demo", "api-v2", "python3", "my_app.1"] {
            assert!(check_file_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn names_with_control_characters_are_refused() {
        for bad in ["a\nb", "a\u{1b}[2J"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("api").is_ok());
    }
}
