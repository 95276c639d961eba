//! The conformance suite: language-neutral scenarios (`conformance/scenarios/*.json`) run
//! through a driver (any client implementation behind the JSON-lines driver protocol; the Rust
//! SDK's is `im-driver-rust`), and server checks on the wire against any server at a URL.
//! `conformance/vectors/` holds the golden wire vectors (checked by `im-proto`'s tests and by
//! Google's protobuf runtime).
//!
//! Results come out as JSON lines (one per scenario or check) and a summary ending with
//! `N passed, N failed`; `conformance/baseline/<implementation>.json` records what passed, and
//! a run fails when something that passed before fails. docs/CONFORMANCE.md describes it all.

pub mod checks;
pub mod driver;
pub mod scenario;
pub mod system;

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

pub use im_proto as proto;

/// One result line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `scenario` or `server`.
    pub suite: String,
    /// The scenario or check.
    pub name: String,
    /// Who was checked (`rust`, or `server`).
    pub implementation: String,
    /// `None` when it passed; what failed otherwise.
    pub failure: Option<String>,
}

impl Outcome {
    /// The JSON line of the machine-readable report.
    pub fn json(&self) -> Value {
        json!({
            "suite": self.suite, "name": self.name, "implementation": self.implementation,
            "passed": self.failure.is_none(), "failure": self.failure,
        })
    }
}

/// The human summary: failures first, then the closing `N passed, N failed` line.
pub fn summary(outcomes: &[Outcome]) -> String {
    let mut text = String::new();
    for o in outcomes.iter().filter(|o| o.failure.is_some()) {
        text.push_str(&format!(
            "FAILED {} {}/{}: {}\n",
            o.implementation,
            o.suite,
            o.name,
            o.failure.as_deref().unwrap_or_default()
        ));
    }
    let passed = outcomes.iter().filter(|o| o.failure.is_none()).count();
    text.push_str(&format!(
        "{passed} passed, {} failed\n",
        outcomes.len() - passed
    ));
    text
}

/// A baseline: for each suite/name, whether it passed (`"pass"` or `"fail"`).
pub type Baseline = BTreeMap<String, String>;

/// The baseline key of an outcome.
pub fn key(outcome: &Outcome) -> String {
    format!("{}/{}", outcome.suite, outcome.name)
}

/// Reads a baseline file (missing: empty).
pub fn read_baseline(path: &Path) -> Result<Baseline, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(_) => Ok(Baseline::new()),
    }
}

/// The baseline these outcomes make.
pub fn baseline_of(outcomes: &[Outcome]) -> Baseline {
    outcomes
        .iter()
        .map(|o| {
            (
                key(o),
                if o.failure.is_none() { "pass" } else { "fail" }.to_owned(),
            )
        })
        .collect()
}

/// What regressed against `baseline`: passed there, failing now. With `complete`, a run of
/// everything, a passing entry that did not run at all counts too.
pub fn regressions(baseline: &Baseline, outcomes: &[Outcome], complete: bool) -> Vec<String> {
    let now = baseline_of(outcomes);
    baseline
        .iter()
        .filter(|(_, v)| v.as_str() == "pass")
        .filter(|(k, _)| match now.get(*k).map(String::as_str) {
            Some(result) => result != "pass",
            None => complete,
        })
        .map(|(k, _)| k.clone())
        .collect()
}

pub mod runner {
    //! A whole run: the system (started here or at a URL), the proxy, the driver, every
    //! scenario, then the server checks.

    use std::path::PathBuf;

    use serde_json::json;

    use im_testkit::{APP_SECRET, Embedded, Proxy};

    use crate::{Outcome, checks, driver::Driver, scenario, system::Target};

    /// What to run.
    #[derive(Debug, Clone)]
    pub struct Options {
        /// The scenario directory.
        pub scenarios: PathBuf,
        /// The driver program.
        pub driver: String,
        /// The implementation's name in the results.
        pub implementation: String,
        /// Only scenarios whose name contains this.
        pub only: Option<String>,
        /// Run the server checks too.
        pub server_checks: bool,
    }

    /// Runs everything against `external`, or against an embedded server started here.
    pub async fn run(external: Option<Target>, options: &Options) -> Result<Vec<Outcome>, String> {
        let scenarios = scenario::load_all(&options.scenarios)?;
        let mut embedded = match external {
            Some(_) => None,
            // Short heartbeats, so that a silent connection's timeout is checked in seconds.
            None => Some(
                Embedded::builder()
                    .core(|core| {
                        core.gateway.heartbeat_interval = std::time::Duration::from_secs(1);
                        core.gateway.idle_timeout = std::time::Duration::from_secs(3);
                    })
                    .start()
                    .await,
            ),
        };
        let target = match (&embedded, external) {
            (Some(e), _) => Target {
                url: e.url.clone(),
                api: e.api_url(),
                app_secret: APP_SECRET.into(),
            },
            (None, Some(t)) => t,
            (None, None) => unreachable!("one of the two is set"),
        };
        let proxy = Proxy::start(&target.url).await.map_err(|e| e.to_string())?;
        let mut driver =
            Driver::spawn(&options.driver, &[]).map_err(|e| format!("{}: {e}", options.driver))?;
        driver.call(json!({"cmd": "hello"})).await?;
        // Unique per run, so that reruns against a long-lived server never meet earlier data.
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() % 10_000_000_000);
        let mut outcomes = Vec::new();
        for (n, s) in scenarios.iter().enumerate() {
            if options
                .only
                .as_ref()
                .is_some_and(|only| !s.name.contains(only.as_str()))
            {
                continue;
            }
            let suffix = format!("{run_id}x{n}");
            let result = scenario::run(s, &mut driver, &target, &proxy, &suffix).await;
            outcomes.push(Outcome {
                suite: "scenario".into(),
                name: s.name.clone(),
                implementation: options.implementation.clone(),
                failure: result.err(),
            });
        }
        driver.stop().await;
        if options.server_checks {
            for check in checks::run_all(&target, &format!("{run_id}s")).await {
                outcomes.push(Outcome {
                    suite: "server".into(),
                    name: check.name.into(),
                    implementation: "server".into(),
                    failure: check.outcome.err(),
                });
            }
        }
        if let Some(embedded) = &mut embedded {
            embedded.stop().await;
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::subset;

    fn outcome(name: &str, failure: Option<&str>) -> Outcome {
        Outcome {
            suite: "scenario".into(),
            name: name.into(),
            implementation: "rust".into(),
            failure: failure.map(str::to_owned),
        }
    }

    #[test]
    fn expectations_name_only_what_they_check() {
        let actual =
            json!({"type": "message", "seq": 2, "server_msg_id": "x", "list": [{"a": 1, "b": 2}]});
        assert!(subset(&json!({"type": "message", "seq": 2}), &actual));
        assert!(subset(&json!({"list": [{"a": 1}]}), &actual));
        assert!(!subset(&json!({"seq": 3}), &actual));
        assert!(
            !subset(&json!({"list": []}), &actual),
            "arrays compare element by element"
        );
        assert!(!subset(&json!({"missing": null}), &actual));
    }

    #[test]
    fn a_pass_that_turns_into_a_failure_is_a_regression() {
        let before = baseline_of(&[
            outcome("a", None),
            outcome("b", Some("x")),
            outcome("c", None),
        ]);
        let now = [outcome("a", Some("broke")), outcome("b", None)];
        assert_eq!(
            regressions(&before, &now, true),
            ["scenario/a", "scenario/c"]
        );
        assert_eq!(
            regressions(&before, &now, false),
            ["scenario/a"],
            "a partial run"
        );
        let summary = summary(&now);
        assert!(summary.ends_with("1 passed, 1 failed\n"), "{summary}");
        assert!(summary.contains("FAILED rust scenario/a: broke"));
    }
}
