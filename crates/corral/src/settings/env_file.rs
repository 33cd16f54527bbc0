//! `--env-file`: variables for the workers in dotenv syntax (`NAME=value`,
//! `export NAME=value`, quotes, `#` comments), read by the `dotenvy` crate
//! when the settings are resolved: at start and at each reload, off the
//! supervisor's loop.

use std::ffi::OsString;
use std::path::Path;

use crate::error::Error;

/// The variables of the file at `path`, in order, or one line naming the
/// file, the line and the fix.
pub(crate) fn read(path: &Path) -> Result<Vec<(OsString, OsString)>, Error> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|err| Error::Config(format!("--env-file {name}: cannot read it: {err}")))?;
    parse(&text).map_err(|why| Error::Config(format!("--env-file {name}: {why}")))
}

/// The variables of dotenv `text`, or where and why it is not.
pub(crate) fn parse(text: &str) -> Result<Vec<(OsString, OsString)>, String> {
    let mut variables = Vec::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((key, value)) => {
                crate::protocol::env::check_variable(key.as_ref(), value.as_ref())
                    .map_err(|err| err.to_string())?;
                variables.push((key.into(), value.into()));
            }
            Err(dotenvy::Error::LineParse(line, _)) => {
                let first = line.lines().next().unwrap_or_default();
                let number = text
                    .lines()
                    .position(|candidate| candidate == first)
                    .map_or(String::new(), |at| format!("line {}: ", at + 1));
                return Err(format!(
                    "{number}{first:?} is not NAME=value (dotenv syntax: NAME=value, quotes \
                     for spaces, # for comments)"
                ));
            }
            Err(err) => return Err(err.to_string()),
        }
    }
    Ok(variables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines_are_read_in_order() {
        let read = parse("# comment\nA=1\nexport B=\"two words\"\n\nC='x'\n").unwrap();
        let read: Vec<(String, String)> = read
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        assert_eq!(
            read,
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into())
            ]
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = parse("A=1\nnot a variable\n").unwrap_err();
        assert!(err.starts_with("line 2: \"not a variable\""), "{err}");
        let err = parse("CORRAL_WORKER_ID=3\n").unwrap_err();
        assert!(err.contains("CORRAL_WORKER_ID"), "{err}");
    }
}
