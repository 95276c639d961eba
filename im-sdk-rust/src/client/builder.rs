//! How a [`Client`] is made: the builder, its [`Config`], where tokens come from
//! ([`TokenProvider`]), and the gateway URLs it parses into endpoints.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use im_proto::{ErrorCode, v1::Platform};
use tokio::runtime::Handle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{Client, connection::Connection};
use crate::{
    error::{Error, Result},
    groups::BusinessApi,
    store::{LocalStore, MemoryStore},
};

/// Supplies access tokens; asked before every connection, with `refresh` set when the server
/// said the last one had expired.
#[async_trait]
pub trait TokenProvider: Send + Sync + 'static {
    /// A token for the next connection.
    async fn token(&self, refresh: bool) -> Result<String>;
}

/// A token that never changes (tests, tools, short sessions).
#[derive(Debug, Clone)]
pub struct StaticToken(pub String);

#[async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self, _refresh: bool) -> Result<String> {
        Ok(self.0.clone())
    }
}

/// Timeouts, limits and backoff of a client.
#[derive(Debug, Clone)]
pub struct Config {
    /// Opening a connection (TCP, upgrade, Hello) may take this long.
    pub connect_timeout: Duration,
    /// A request (other than a send) may wait this long for its answer, connection or not.
    pub request_timeout: Duration,
    /// The first reconnect delay; it doubles per failed attempt, with jitter.
    pub backoff_min: Duration,
    /// The longest reconnect delay.
    pub backoff_max: Duration,
    /// Delivery acknowledgements are sent this long after the entries they cover.
    pub ack_delay: Duration,
    /// Events waiting for the app; the client slows down rather than dropping any.
    pub event_buffer: usize,
    /// The largest frame this client accepts (announced in the Hello; 0: 1 MiB).
    pub max_frame_bytes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            ack_delay: Duration::from_millis(100),
            event_buffer: 1024,
            max_frame_bytes: 0,
        }
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    url: String,
    more_urls: Vec<String>,
    device_id: String,
    platform: Platform,
    token: Arc<dyn TokenProvider>,
    store: Arc<dyn LocalStore>,
    config: Config,
    runtime: Option<Handle>,
    business_api: Option<String>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A client of the server at `url` (`ws://host:port/ws`) on device `device_id`, with
    /// tokens from `token`.
    pub fn new(
        url: impl Into<String>,
        device_id: impl Into<String>,
        token: Arc<dyn TokenProvider>,
    ) -> Self {
        Self {
            url: url.into(),
            more_urls: Vec::new(),
            device_id: device_id.into(),
            platform: Platform::Unspecified,
            token,
            store: Arc::new(MemoryStore::default()),
            config: Config::default(),
            runtime: None,
            business_api: None,
        }
    }

    /// More gateways of the same deployment (other core nodes), tried in turn after the first:
    /// when a connection cannot be opened or is lost, the next attempt goes to the next URL.
    pub fn more_urls(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.more_urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The business service's HTTP API (`http://host:port`), for groups, membership and media.
    pub fn business_api(mut self, url: impl Into<String>) -> Self {
        self.business_api = Some(url.into());
        self
    }

    /// The device's platform, announced in the Hello.
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Where the client keeps its state (default: in memory).
    pub fn store(mut self, store: Arc<dyn LocalStore>) -> Self {
        self.store = store;
        self
    }

    /// Timeouts, limits and backoff.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The tokio runtime the connection task runs on (default: the current one).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Starts the client: it connects in the background and keeps connecting until closed.
    pub fn build(self) -> Result<Client> {
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => Handle::try_current().map_err(|_| {
                Error::new(
                    ErrorCode::InvalidArgument,
                    "no tokio runtime: build the client inside one or pass ClientBuilder::runtime",
                )
            })?,
        };
        let endpoints = std::iter::once(&self.url)
            .chain(&self.more_urls)
            .map(|url| Endpoint::parse(url))
            .collect::<Result<Vec<_>>>()?;
        let (connection, handles) = Connection::new(
            endpoints,
            self.device_id,
            self.platform,
            self.token.clone(),
            self.store.clone(),
            self.config,
        );
        let business = self
            .business_api
            .map(|url| Arc::new(BusinessApi::new(&url, self.token.clone())));
        let task = runtime.spawn(connection.run());
        Ok(Client {
            business,
            runtime,
            commands: handles.commands,
            events: Mutex::new(Some(handles.events)),
            state: handles.state,
            store: self.store,
            task: Mutex::new(Some(task)),
        })
    }
}

/// A gateway's address, taken from its URL.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// The URL as given (the upgrade request goes to it).
    pub(super) url: String,
    /// `host:port`, for the TCP connection.
    pub(super) host_port: String,
}

impl Endpoint {
    /// Checks a `ws://` URL and takes its host and port (80 when absent).
    pub(super) fn parse(url: &str) -> Result<Self> {
        let invalid = |why: &str| Error::new(ErrorCode::InvalidArgument, format!("{url}: {why}"));
        let request = url
            .into_client_request()
            .map_err(|e| invalid(&e.to_string()))?;
        let uri = request.uri();
        if uri.scheme_str() != Some("ws") {
            return Err(invalid("only ws:// URLs are supported by this build"));
        }
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        Ok(Self {
            url: url.to_owned(),
            host_port: format!("{host}:{port}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_takes_host_and_port_from_a_ws_url() {
        let endpoint = Endpoint::parse("ws://127.0.0.1:7100/ws").unwrap();
        assert_eq!(endpoint.host_port, "127.0.0.1:7100");
        assert_eq!(endpoint.url, "ws://127.0.0.1:7100/ws");
        assert_eq!(
            Endpoint::parse("ws://example.com/ws").unwrap().host_port,
            "example.com:80",
            "the default port"
        );
    }

    #[test]
    fn an_endpoint_refuses_what_this_build_cannot_reach() {
        for url in ["wss://example.com/ws", "http://example.com", "not a url"] {
            let error = Endpoint::parse(url).unwrap_err();
            assert_eq!(
                error.error_code(),
                Some(ErrorCode::InvalidArgument),
                "{url}"
            );
        }
    }
}
