//! The whole conformance suite in CI: every scenario through the Rust driver and every server
//! check, against an embedded server the runner starts; nothing that passed in the committed
//! baseline may fail, the baseline covers every scenario and check, and docs/CONFORMANCE.md's
//! table says what the baseline says.

#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, path::Path};

use im_conformance::{Outcome, baseline_of, read_baseline, regressions, runner, scenario, summary};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_and_server_check_passes_as_the_baseline_says() {
    let options = runner::Options {
        scenarios: root().join("conformance/scenarios"),
        driver: env!("CARGO_BIN_EXE_im-driver-rust").into(),
        implementation: "rust".into(),
        only: None,
        server_checks: true,
    };
    let outcomes = runner::run(None, &options).await.unwrap();
    eprint!("{}", summary(&outcomes));
    let scenarios = scenario::load_all(&options.scenarios).unwrap();
    assert!(scenarios.len() >= 40, "at least 40 scenarios");
    for implementation in ["rust", "server"] {
        let mine: Vec<Outcome> = outcomes
            .iter()
            .filter(|o| o.implementation == implementation)
            .cloned()
            .collect();
        let baseline =
            read_baseline(&root().join(format!("conformance/baseline/{implementation}.json")))
                .unwrap();
        let regressed = regressions(&baseline, &mine, true);
        assert!(regressed.is_empty(), "regressed: {regressed:?}");
        let now = baseline_of(&mine);
        let missing: Vec<&String> = now.keys().filter(|k| !baseline.contains_key(*k)).collect();
        assert!(
            missing.is_empty(),
            "not in the baseline (run im-conformance --bless): {missing:?}"
        );
    }
}

/// The doc's results table, row by row: `name -> mark`.
fn doc_table() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(root().join("docs/CONFORMANCE.md")).unwrap();
    let start = doc.find("## Results").expect("a Results section");
    doc[start..]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[3].to_owned())
        })
        .collect()
}

#[test]
fn the_docs_table_matches_the_baselines() {
    let mut expected = BTreeMap::new();
    for implementation in ["rust", "server"] {
        let baseline =
            read_baseline(&root().join(format!("conformance/baseline/{implementation}.json")))
                .unwrap();
        for (key, result) in baseline {
            let name = key
                .split_once('/')
                .map_or(key.clone(), |(_, n)| n.to_owned());
            let mark = if result == "pass" { "pass" } else { "FAIL" };
            expected.insert(name, mark.to_owned());
        }
    }
    assert_eq!(doc_table(), expected);
}
