//! `corral generate man DIR`, `corral generate completions SHELL` and
//! `corral generate reference`: the man pages and completions the Debian
//! package installs and docs/cli.md, generated from the same clap
//! definitions as `--help`, so every flag is in them.

use std::path::PathBuf;
use std::process::{Command, Output};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

fn corral(args: &[&str]) -> Output {
    Command::new(CORRAL)
        .args(args)
        .output()
        .expect("corral runs")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

/// The long flags (`--name`) a help text lists.
fn long_flags(help: &str) -> Vec<String> {
    help.split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| flag.trim_end_matches([',', '.', ':']))
        .filter(|flag| !flag.is_empty() && flag.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(|flag| format!("--{flag}"))
        .collect()
}

#[test]
fn man_pages_cover_every_visible_command_and_every_flag_of_run() {
    let dir = std::env::temp_dir().join(format!("corral-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    stdout(&corral(&["generate", "man", dir.to_str().expect("UTF-8")]));

    let page = |name: &str| -> PathBuf { dir.join(format!("{name}.1")) };
    assert!(page("corral").is_file());
    let help = stdout(&corral(&["--help"]));
    for command in [
        "run", "ls", "status", "reload", "scale", "stop", "logs", "events", "top", "check",
    ] {
        assert!(
            help.contains(&format!("  {command} ")),
            "`{command}` in --help"
        );
        assert!(
            page(&format!("corral-{command}")).is_file(),
            "a page for {command}"
        );
    }
    // The generator is for packagers: neither in --help nor in the pages.
    assert!(!help.contains("generate"), "{help}");
    assert!(!page("corral-generate").exists());

    // roff escapes `-` as `\-`; undo it to compare with --help.
    let run_page = std::fs::read_to_string(page("corral-run"))
        .expect("corral-run.1")
        .replace("\\-", "-");
    let run_flags = long_flags(&stdout(&corral(&["run", "--help"])));
    assert!(
        run_flags.contains(&"--workers".to_string()),
        "{run_flags:?}"
    );
    for flag in &run_flags {
        assert!(run_page.contains(flag.as_str()), "{flag} in corral-run.1");
    }
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

#[test]
fn completions_for_bash_zsh_and_fish_know_the_subcommands_and_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&corral(&["generate", "completions", shell]));
        for word in ["reload", "workers", "grace", "metrics"] {
            assert!(script.contains(word), "{shell} completion knows {word}");
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error_naming_the_shells() {
    let output = corral(&["generate", "completions", "ksh"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("'ksh'") && stderr.contains("bash"),
        "{stderr}"
    );
}

/// docs/cli.md is `corral generate reference`'s output, committed: a flag
/// or help text changed without regenerating it fails here.
#[test]
fn docs_cli_md_is_the_generated_reference() {
    let generated = stdout(&corral(&["generate", "reference"]));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == committed,
        "docs/cli.md differs from the flags' definitions: regenerate it with \
         `cargo run -p corral-cli -- generate reference > docs/cli.md`"
    );
    for wanted in [
        "## `corral run`",
        "`-w, --workers <N>`",
        "`--ready-timeout <SECONDS>`",
    ] {
        assert!(generated.contains(wanted), "{wanted} in the reference");
    }
    assert!(
        !generated.contains("## `corral generate`"),
        "the hidden generator is left out"
    );
}
