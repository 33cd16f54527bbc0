//! Every relative link in README.md and docs/*.md leads somewhere: the file
//! (or directory) exists, and a `#anchor` names a heading of the target,
//! slugged as GitHub slugs headings.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and every markdown file in docs/.
fn documents() -> Vec<PathBuf> {
    let root = repository();
    let mut files = vec![root.join("README.md")];
    let docs = std::fs::read_dir(root.join("docs")).expect("docs/ is readable");
    for entry in docs {
        let path = entry.expect("a docs/ entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The text outside fenced code blocks, and outside inline code spans (a
/// `[x](y)` in code is not a link).
fn prose(markdown: &str) -> String {
    let mut outside_fences = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            outside_fences.push_str(line);
            outside_fences.push('\n');
        }
    }
    // Code spans may wrap across lines; pair backticks through the text.
    outside_fences
        .split('`')
        .step_by(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The targets of `[text](target)` links.
fn link_targets(markdown: &str) -> Vec<String> {
    let text = prose(markdown);
    let mut targets = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].trim();
        // `](` inside prose without a link target (spaces) is not a link.
        if !target.is_empty() && !target.contains(char::is_whitespace) {
            targets.push(target.to_string());
        }
        rest = &after[end..];
    }
    targets
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped (but `-`
/// and `_`), spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors a markdown file's headings give (a repeated heading gets
/// `-1`, `-2`… as on GitHub).
fn anchors(markdown: &str) -> HashSet<String> {
    let mut anchors = HashSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if fenced {
            continue;
        }
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let mut anchor = base.clone();
        let mut n = 0;
        while anchors.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        anchors.insert(anchor);
    }
    anchors
}

/// What is wrong with `target` as a link from `document`, if anything.
fn broken(document: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        document.to_path_buf()
    } else {
        document.parent().expect("a directory").join(path)
    };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let anchor = anchor?;
    if file.is_dir() || file.extension().is_none_or(|ext| ext != "md") {
        return Some("an anchor into something that is not a markdown file".into());
    }
    let text = std::fs::read_to_string(&file).expect("the target is readable");
    if anchors(&text).contains(anchor) {
        None
    } else {
        Some(format!("{} has no heading #{anchor}", file.display()))
    }
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for document in documents() {
        let text = std::fs::read_to_string(&document).expect("readable");
        for target in link_targets(&text) {
            checked += 1;
            if let Some(problem) = broken(&document, &target) {
                problems.push(format!("{}: ({target}): {problem}", document.display()));
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} links found: is the parser right?"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_finds_links_outside_code_and_slugs_headings_as_github() {
    let text = "See [a](a.md#x) and [b\nc](b.md).\n`[not](code.md)`\n```\n[no](fence.md)\n```\n";
    assert_eq!(link_targets(text), ["a.md#x", "b.md"]);
    assert_eq!(
        slug("Messages (Node's `worker.send`, `cluster.on('message')`, typed)"),
        "messages-nodes-workersend-clusteronmessage-typed"
    );
    assert_eq!(slug("`corral top`"), "corral-top");
    let headings = anchors("# A\n## Same\n## Same\n```\n# fenced\n```\n");
    assert!(headings.contains("same") && headings.contains("same-1"));
    assert!(!headings.contains("fenced"));
}

#[test]
fn a_missing_file_or_heading_is_reported() {
    let readme = repository().join("README.md");
    assert!(broken(&readme, "docs/no-such-page.md").is_some());
    assert!(broken(&readme, "docs/operating.md#no-such-heading").is_some());
    assert!(broken(&readme, "docs/operating.md#supervision").is_none());
    assert!(broken(&readme, "https://example.com/x#y").is_none());
}
