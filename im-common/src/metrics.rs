//! Metrics in the Prometheus text format. Services record through the `metrics` facade
//! (`metrics::counter!` and friends); one registry per process collects them, and each
//! service's HTTP endpoint serves [`render`] at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's registry, installed on first use; `None` if another recorder was installed
/// before (metrics then go there).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

/// Everything recorded so far, in the Prometheus text format.
pub fn render() -> String {
    prometheus()
        .map(|handle| {
            handle.run_upkeep();
            handle.render()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn recorded_metrics_are_rendered() {
        super::prometheus();
        metrics::counter!("im_test_events_total", "kind" => "sample").increment(3);
        let text = super::render();
        assert!(
            text.contains("im_test_events_total{kind=\"sample\"} 3"),
            "{text}"
        );
    }
}
