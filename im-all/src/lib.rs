//! The services of the `im-server` binary, composed: the core service (WebSocket gateway,
//! messaging, presence) and the business service (users, tokens, groups, moderation, HTTP and
//! gRPC APIs), each optional, on one bus. In one process the bus is in-process and nothing
//! outside is needed; on NATS the same composition is one node of a cluster.
//!
//! [`System`] is what the binary runs, and what the tests and tools that need the whole system
//! in their own process start (see `im-testkit`'s `Embedded`).

use std::sync::Arc;

use im_business::{server::RunningBusiness, settings::BusinessSettings};
use im_common::{bus::Bus, process::StartError, settings::ClusterSettings};
use im_server::{
    server::{Parts, RunningCore},
    settings::CoreSettings,
};
use tokio_util::sync::CancellationToken;

/// Every section the system reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `[cluster]`: node id, token secret, NATS, Redis.
    pub cluster: ClusterSettings,
    /// `[core]`.
    pub core: CoreSettings,
    /// `[business]`.
    pub business: BusinessSettings,
}

/// Which services a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    /// The core service.
    pub core: bool,
    /// The business service.
    pub business: bool,
}

impl Services {
    /// Both, as the embedded default runs them.
    pub const ALL: Self = Self {
        core: true,
        business: true,
    };
}

/// The services of one process, running.
pub struct System {
    /// The core service, if this process runs it.
    pub core: Option<RunningCore>,
    /// The business service, if this process runs it.
    pub business: Option<RunningBusiness>,
    /// The bus they share.
    pub bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("core", &self.core)
            .field("business", &self.business)
            .finish_non_exhaustive()
    }
}

impl System {
    /// Starts `services` on `bus` (the business service first: a core node asks it for the
    /// token revocations on record before it opens its gateway).
    pub async fn start(
        settings: &Settings,
        services: Services,
        bus: Arc<dyn Bus>,
    ) -> Result<Self, StartError> {
        Self::start_with(settings, services, bus, |parts| parts).await
    }

    /// [`Self::start`], with the core's parts (store, presence, rates, push hook) as `parts`
    /// makes them from the ones its settings name.
    pub async fn start_with(
        settings: &Settings,
        services: Services,
        bus: Arc<dyn Bus>,
        parts: impl FnOnce(Parts) -> Parts,
    ) -> Result<Self, StartError> {
        let shutdown = CancellationToken::new();
        let business = if services.business {
            Some(
                im_business::server::start(
                    &settings.cluster,
                    &settings.business,
                    bus.clone(),
                    shutdown.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        let core = if services.core {
            let started = async {
                let verifier = settings.cluster.token_verifier()?;
                let made =
                    im_server::server::parts(&settings.cluster, &settings.core, bus.as_ref())
                        .await?;
                im_server::server::start_with(
                    &settings.cluster,
                    &settings.core,
                    bus.clone(),
                    Arc::new(verifier),
                    parts(made),
                    shutdown.clone(),
                )
                .await
            };
            match started.await {
                Ok(core) => Some(core),
                Err(error) => {
                    shutdown.cancel();
                    if let Some(business) = business {
                        business.stopped().await;
                    }
                    return Err(error);
                }
            }
        } else {
            None
        };
        Ok(Self {
            core,
            business,
            bus,
            shutdown,
        })
    }

    /// Stops gracefully: the gateway stops accepting, connections finish what is in flight
    /// and are told SHUTTING_DOWN, every acknowledged send is stored, the APIs drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(core) = self.core.take() {
            core.stopped().await;
        }
        if let Some(business) = self.business.take() {
            business.stopped().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every leaf key of `value`, dotted under `prefix`.
    fn keys(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    keys(&format!("{prefix}.{key}"), value, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned());
            }
        }
    }

    #[test]
    fn deployment_lists_every_setting_in_its_section() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/DEPLOYMENT.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        let mut documented = BTreeSet::new();
        let mut section = String::new();
        for row in doc.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (Some(table), Some(key)) = (cells.get(1), cells.get(2)) else {
                continue;
            };
            if let Some(name) = table.strip_prefix("`[").and_then(|t| t.strip_suffix("]`")) {
                section = name.to_owned();
            }
            if let Some(key) = key.strip_prefix('`').and_then(|k| k.strip_suffix('`')) {
                documented.insert(format!("{section}.{key}"));
            }
        }
        let mut settings = BTreeSet::new();
        let defaults = [
            ("cluster", serde_json::to_value(ClusterSettings::default())),
            ("core", serde_json::to_value(CoreSettings::default())),
            // An optional section is listed with its keys.
            (
                "business",
                serde_json::to_value(BusinessSettings {
                    media_s3: Some(im_business::media::S3Config::default()),
                    ..BusinessSettings::default()
                }),
            ),
        ];
        for (section, value) in defaults {
            keys(section, &value.unwrap_or_default(), &mut settings);
        }
        let missing: Vec<&String> = settings.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "docs/DEPLOYMENT.md does not list {missing:?}"
        );
        let stale: Vec<&String> = documented.difference(&settings).collect();
        assert!(
            stale.is_empty(),
            "docs/DEPLOYMENT.md lists settings that are gone: {stale:?}"
        );
    }
}
