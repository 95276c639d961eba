//! Results: one JSON value per scenario, and table rows (figure, im-server, baseline, target).

use serde_json::Value;

/// One line of the table: a figure beside its baseline and its target.
pub(crate) struct Row {
    /// The scenario and the figure.
    pub(crate) figure: String,
    /// What the server achieved.
    pub(crate) value: String,
    /// What the baseline achieved in the same run.
    pub(crate) baseline: String,
    /// The target, and whether it is met.
    pub(crate) target: String,
}

impl Row {
    /// A row from its four cells.
    pub(crate) fn new(
        figure: impl Into<String>,
        value: impl Into<String>,
        baseline: impl Into<String>,
        target: impl Into<String>,
    ) -> Self {
        Self {
            figure: figure.into(),
            value: value.into(),
            baseline: baseline.into(),
            target: target.into(),
        }
    }
}

/// What one scenario measured.
pub(crate) struct Outcome {
    /// Its key in the JSON report.
    pub(crate) name: &'static str,
    /// The measurements.
    pub(crate) json: Value,
    /// The table rows.
    pub(crate) rows: Vec<Row>,
}

impl Outcome {
    /// A scenario that failed: its error in the JSON and in the table.
    pub(crate) fn failed(name: &'static str, error: String) -> Self {
        Self {
            name,
            rows: vec![Row::new(
                name,
                "FAILED",
                "-",
                error.chars().take(100).collect::<String>(),
            )],
            json: serde_json::json!({ "error": error }),
        }
    }

    /// A scenario skipped because `reason`: said in the JSON and in the table.
    pub(crate) fn skipped(name: &'static str, reason: String) -> Self {
        Self {
            name,
            rows: vec![Row::new(name, "SKIPPED", "-", reason.clone())],
            json: serde_json::json!({ "skipped": reason }),
        }
    }
}

/// The rows as an aligned text table.
pub(crate) fn table(rows: &[Row]) -> String {
    let header = Row::new("figure", "im-server", "baseline (same run)", "target");
    let all: Vec<&Row> = std::iter::once(&header).chain(rows).collect();
    let width = |f: fn(&Row) -> &str| all.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let widths = [
        width(|r| &r.figure),
        width(|r| &r.value),
        width(|r| &r.baseline),
        width(|r| &r.target),
    ];
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let mut out = String::new();
    for (i, r) in all.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            pad(&r.figure, widths[0]),
            pad(&r.value, widths[1]),
            pad(&r.baseline, widths[2]),
            pad(&r.target, widths[3]),
        ));
        if i == 0 {
            out.push_str(&format!(
                "|{}|{}|{}|{}|\n",
                "-".repeat(widths[0] + 2),
                "-".repeat(widths[1] + 2),
                "-".repeat(widths[2] + 2),
                "-".repeat(widths[3] + 2),
            ));
        }
    }
    out
}

/// `met` or `MISSED` with the ratio achieved.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
