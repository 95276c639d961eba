//! The docs describe what the code does; these tests hold them to it.

use std::{fs, path::Path};

use im_proto::{
    FILE_DESCRIPTOR_SET,
    bus::{Pattern, SUBJECTS},
    error::ERROR_CODES,
};
use prost_reflect::DescriptorPool;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The body rows of the Markdown table whose header line is `header`, cells trimmed.
fn table(text: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|line| line.trim() != header);
    assert!(lines.next().is_some(), "no table with header {header:?}");
    lines
        .skip(1) // the |---| line
        .take_while(|line| line.trim_start().starts_with('|'))
        .map(|line| {
            let cells: Vec<String> = line
                .trim()
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            cells[1..cells.len() - 1].to_vec()
        })
        .collect()
}

/// The text of a `## ` section.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

#[test]
fn protocol_error_table_matches_the_code() {
    let rows = table(
        &read("docs/PROTOCOL.md"),
        "| code | name | retryable | meaning |",
    );
    let expected: Vec<Vec<String>> = ERROR_CODES
        .iter()
        .map(|info| {
            vec![
                (info.code as i32).to_string(),
                info.name.to_owned(),
                if info.retryable { "yes" } else { "no" }.to_owned(),
                info.meaning.to_owned(),
            ]
        })
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn protocol_frame_catalogue_names_every_variant() {
    let doc = read("docs/PROTOCOL.md");
    let frames = section(&doc, "Frames");
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptors decode");
    for frame in ["im.v1.ClientFrame", "im.v1.ServerFrame"] {
        let desc = pool.get_message_by_name(frame).expect("frame type exists");
        let body = desc
            .oneofs()
            .find(|o| o.name() == "body")
            .expect("frames have a body");
        for variant in body.fields() {
            assert!(
                frames.contains(&format!("`{}`", variant.name())),
                "docs/PROTOCOL.md, Frames: no entry for {frame} variant `{}`",
                variant.name()
            );
        }
    }
}

#[test]
fn architecture_subject_table_matches_the_bus() {
    let rows = table(
        &read("docs/ARCHITECTURE.md"),
        "| subject | pattern | payload | reply |",
    );
    let expected: Vec<Vec<String>> = SUBJECTS
        .iter()
        .map(|s| {
            let (pattern, reply) = match s.pattern {
                Pattern::Event => ("event", String::new()),
                Pattern::Request { reply } => ("request", format!("`{}`", reply())),
            };
            vec![
                format!("`{}`", s.name),
                pattern.to_owned(),
                format!("`{}`", (s.payload)()),
                reply,
            ]
        })
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn readme_test_command_is_what_ci_runs() {
    assert!(
        read("README.md").contains("```sh\n./scripts/test\n```"),
        "README names ./scripts/test"
    );
    assert!(
        read(".ci/run").contains("\n./scripts/test\n"),
        ".ci/run runs the README's command"
    );
}
