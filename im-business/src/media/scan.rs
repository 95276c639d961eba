//! Content safety: what processing asks before media is served. Each configured scanner
//! gives a verdict on the stored bytes, in turn: ClamAV over clamd's `INSTREAM` protocol,
//! then the app's own scanning webhook. The first that finds the bytes unsafe decides; a
//! scanner that cannot answer (down, too slow, an answer it cannot read) makes the whole scan
//! [`ScanOutcome::Unavailable`], which [`ScanConfig::unavailable`] turns into holding the
//! media (it stays PROCESSING and the sweep asks again) or letting it through unscanned.
//!
//! The app's webhook gets a POST of JSON `{media_id, owner_user_id, sha256_hex, mime_type,
//! size_bytes, url}` (`url`: a signed GET of the bytes, valid for the scan's timeout), with
//! `Authorization: Bearer <secret>` when one is set, and answers `{"verdict": "allow" |
//! "quarantine" | "reject", "reason": "..."}`.

use std::{io, sync::Arc, time::Duration};

use clamav_client::tokio::{Socket, Tcp, TransportProtocol};
use serde::{Deserialize, Serialize};

use super::{ObjectStore, Serving, object_key};
use crate::store::MediaRecord;

/// The bytes one read of the object hands the scanners.
const SCAN_CHUNK: u64 = 1 << 20;
/// The longest finding or reason kept (the facts column is bounded and ASCII).
const MAX_NOTE: usize = 200;

/// What to do with media when a scanner cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnavailable {
    /// Keep it PROCESSING (served to no one) and ask again on the next sweep.
    #[default]
    Hold,
    /// Serve it unscanned, and say so in its facts.
    Allow,
}

/// Scanning: section `[business.media.scan]` of the config file. With neither scanner set,
/// media is served without a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// clamd's address: `host:port` (TCP) or `unix:/path/to/clamd.ctl`; empty for none.
    pub clamd: String,
    /// The app's scanning webhook; empty for none.
    pub webhook_url: String,
    /// Sent as `Authorization: Bearer <secret>` to the webhook, when set.
    pub webhook_secret: im_common::settings::Secret,
    /// How long one scanner may take over one object before it counts as unavailable.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// What to do when a scanner cannot answer.
    pub unavailable: WhenUnavailable,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            clamd: String::new(),
            webhook_url: String::new(),
            webhook_secret: im_common::settings::Secret::default(),
            timeout: Duration::from_secs(30),
            unavailable: WhenUnavailable::Hold,
        }
    }
}

/// A scanner's verdict on one object, as kept in the media's facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanRecord {
    /// `clamd` or `webhook`.
    pub scanner: String,
    /// `clean`, `quarantine`, `reject`, or `unavailable` (let through by policy).
    pub verdict: String,
    /// What it found or said (a signature name, the webhook's reason, the failure).
    pub note: String,
    /// The scanner's version as it reports it (clamd's engine and signature database).
    pub version: String,
}

/// What the scan as a whole decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    /// Every scanner passed it (or none is configured).
    Clean(Vec<ScanRecord>),
    /// A scanner found it unsafe: quarantine (the last record says who and why).
    Quarantine(Vec<ScanRecord>),
    /// The app's webhook refused it outright: rejected, nothing kept.
    Reject(Vec<ScanRecord>),
    /// A scanner could not answer (the last record says which and why).
    Unavailable(Vec<ScanRecord>),
}

/// The configured scanners.
#[derive(Clone)]
pub(super) struct Scanners {
    clamd: Option<Clamd>,
    webhook: Option<WebhookScanner>,
    timeout: Duration,
}

impl Scanners {
    /// The scanners `config` names.
    pub(super) fn new(config: &ScanConfig) -> Self {
        let clamd = (!config.clamd.is_empty()).then(|| Clamd::parse(&config.clamd));
        let webhook = (!config.webhook_url.is_empty()).then(|| WebhookScanner {
            url: config.webhook_url.clone(),
            secret: config.webhook_secret.expose().to_owned(),
            http: reqwest::Client::new(),
        });
        Self {
            clamd,
            webhook,
            timeout: config.timeout,
        }
    }

    /// Whether any scanner is configured.
    pub(super) fn any(&self) -> bool {
        self.clamd.is_some() || self.webhook.is_some()
    }

    /// Asks each scanner in turn about the media's stored bytes.
    pub(super) async fn scan(
        &self,
        objects: &Arc<dyn ObjectStore>,
        media: &MediaRecord,
    ) -> ScanOutcome {
        let mut records = Vec::new();
        if let Some(clamd) = &self.clamd {
            let record = match tokio::time::timeout(self.timeout, clamd.scan(objects, media)).await
            {
                Ok(record) => record,
                Err(_) => unavailable("clamd", "no answer within the scan timeout"),
            };
            let verdict = record.verdict.clone();
            records.push(record);
            match verdict.as_str() {
                "clean" => {}
                "quarantine" => return ScanOutcome::Quarantine(records),
                _ => return ScanOutcome::Unavailable(records),
            }
        }
        if let Some(webhook) = &self.webhook {
            let record = webhook.scan(objects, media, self.timeout).await;
            let verdict = record.verdict.clone();
            records.push(record);
            match verdict.as_str() {
                "clean" => {}
                "quarantine" => return ScanOutcome::Quarantine(records),
                "reject" => return ScanOutcome::Reject(records),
                _ => return ScanOutcome::Unavailable(records),
            }
        }
        ScanOutcome::Clean(records)
    }
}

fn record(scanner: &str, verdict: &str, note: &str, version: &str) -> ScanRecord {
    ScanRecord {
        scanner: scanner.to_owned(),
        verdict: verdict.to_owned(),
        note: printable(note),
        version: printable(version),
    }
}

fn unavailable(scanner: &str, why: impl std::fmt::Display) -> ScanRecord {
    record(scanner, "unavailable", &why.to_string(), "")
}

/// `text` as printable ASCII of at most [`MAX_NOTE`] characters: it is kept in a bounded
/// ASCII column and shown to operators, and comes from outside.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_NOTE)
        .collect()
}

/// clamd, over TCP or a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Clamd {
    Tcp(String),
    Unix(String),
}

impl Clamd {
    fn parse(address: &str) -> Self {
        match address.strip_prefix("unix:") {
            Some(path) => Self::Unix(path.to_owned()),
            None => Self::Tcp(address.strip_prefix("tcp://").unwrap_or(address).to_owned()),
        }
    }

    async fn scan(&self, objects: &Arc<dyn ObjectStore>, media: &MediaRecord) -> ScanRecord {
        let answer = match self {
            Self::Tcp(address) => {
                Self::instream(
                    Tcp {
                        host_address: address.as_str(),
                    },
                    objects,
                    media,
                )
                .await
            }
            Self::Unix(path) => {
                Self::instream(
                    Socket {
                        socket_path: path.as_str(),
                    },
                    objects,
                    media,
                )
                .await
            }
        };
        match answer {
            Ok((reply, version)) => match parse_reply(&reply) {
                ClamdReply::Clean => record("clamd", "clean", "", &version),
                ClamdReply::Found(signature) => record("clamd", "quarantine", &signature, &version),
                ClamdReply::Error(error) => unavailable("clamd", error),
            },
            Err(error) => unavailable("clamd", error),
        }
    }

    /// Streams the object to clamd and answers its reply, with its version (asked first, so
    /// a clamd that is down fails before any bytes are read).
    async fn instream<T: TransportProtocol + Copy>(
        connection: T,
        objects: &Arc<dyn ObjectStore>,
        media: &MediaRecord,
    ) -> io::Result<(Vec<u8>, String)> {
        let version = clamav_client::tokio::get_version(connection).await?;
        let version = String::from_utf8_lossy(&version)
            .trim_end_matches(['\0', '\n'])
            .to_owned();
        let key = object_key(&media.sha256_hex);
        let size = u64::try_from(media.size_bytes).unwrap_or(0);
        let chunks = futures::stream::try_unfold(0_u64, move |offset| {
            let objects = objects.clone();
            let key = key.clone();
            async move {
                if offset >= size {
                    return Ok(None);
                }
                let chunk = objects
                    .read_range(&key, offset, SCAN_CHUNK)
                    .await
                    .map_err(io::Error::other)?;
                if chunk.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the object is shorter than its size",
                    ));
                }
                let next = offset + chunk.len() as u64;
                Ok(Some((bytes::Bytes::from(chunk), next)))
            }
        });
        let reply = clamav_client::tokio::scan_stream(chunks, connection, None).await?;
        Ok((reply, version))
    }
}

/// What clamd said of a stream.
#[derive(Debug, PartialEq, Eq)]
enum ClamdReply {
    Clean,
    /// A signature matched: its name.
    Found(String),
    /// clamd could not scan it (a size limit, a failure).
    Error(String),
}

/// Reads clamd's reply to `INSTREAM`: `stream: OK`, `stream: <signature> FOUND`, or
/// `<why> ERROR`, NUL-terminated with the `z` commands.
fn parse_reply(reply: &[u8]) -> ClamdReply {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n']).trim();
    let body = text.strip_prefix("stream:").map(str::trim);
    match body {
        Some("OK") => ClamdReply::Clean,
        Some(body) if body.ends_with(" FOUND") => {
            ClamdReply::Found(body.trim_end_matches(" FOUND").trim().to_owned())
        }
        _ if text.is_empty() => {
            ClamdReply::Error("clamd closed the connection without a reply".into())
        }
        _ => ClamdReply::Error(text.to_owned()),
    }
}

/// The app's own scanner, behind a webhook.
#[derive(Debug, Clone)]
struct WebhookScanner {
    url: String,
    secret: String,
    http: reqwest::Client,
}

/// The webhook's answer.
#[derive(Debug, Deserialize)]
struct WebhookVerdict {
    verdict: String,
    #[serde(default)]
    reason: String,
}

impl WebhookScanner {
    async fn scan(
        &self,
        objects: &Arc<dyn ObjectStore>,
        media: &MediaRecord,
        timeout: Duration,
    ) -> ScanRecord {
        let ttl = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let serving = Serving {
            content_type: media.mime_type.clone(),
            attachment: Some(media.media_id.clone()),
        };
        let url = objects
            .sign_get(
                &object_key(&media.sha256_hex),
                &serving,
                im_common::now_ms().saturating_add(ttl),
            )
            .url;
        let body = serde_json::json!({
            "media_id": media.media_id,
            "owner_user_id": media.owner_user_id,
            "sha256_hex": media.sha256_hex,
            "mime_type": media.mime_type,
            "size_bytes": media.size_bytes,
            "url": url,
        });
        let mut request = self.http.post(&self.url).timeout(timeout).json(&body);
        if !self.secret.is_empty() {
            request = request.bearer_auth(&self.secret);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return unavailable("webhook", error),
        };
        let status = response.status();
        if !status.is_success() {
            return unavailable("webhook", format!("answered {status}"));
        }
        match response.json::<WebhookVerdict>().await {
            Ok(answer) => match answer.verdict.as_str() {
                "allow" => record("webhook", "clean", &answer.reason, ""),
                "quarantine" => record("webhook", "quarantine", &answer.reason, ""),
                "reject" => record("webhook", "reject", &answer.reason, ""),
                other => unavailable("webhook", format!("an unknown verdict {other:?}")),
            },
            Err(error) => unavailable(
                "webhook",
                format!("an answer that is not a verdict: {error}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamd_replies_are_read_as_clean_found_or_error() {
        assert_eq!(parse_reply(b"stream: OK\0"), ClamdReply::Clean);
        assert_eq!(
            parse_reply(b"stream: Eicar-Test-Signature FOUND\0"),
            ClamdReply::Found("Eicar-Test-Signature".into())
        );
        // A signature whose name holds "OK" is still a finding.
        assert_eq!(
            parse_reply(b"stream: Win.OK.Trojan FOUND\0"),
            ClamdReply::Found("Win.OK.Trojan".into())
        );
        assert_eq!(
            parse_reply(b"INSTREAM size limit exceeded. ERROR\0"),
            ClamdReply::Error("INSTREAM size limit exceeded. ERROR".into())
        );
        assert!(matches!(parse_reply(b""), ClamdReply::Error(_)));
    }

    #[test]
    fn addresses_name_tcp_or_a_unix_socket() {
        assert_eq!(
            Clamd::parse("127.0.0.1:3310"),
            Clamd::Tcp("127.0.0.1:3310".into())
        );
        assert_eq!(
            Clamd::parse("tcp://clamd:3310"),
            Clamd::Tcp("clamd:3310".into())
        );
        assert_eq!(
            Clamd::parse("unix:/run/clamav/clamd.ctl"),
            Clamd::Unix("/run/clamav/clamd.ctl".into())
        );
    }

    #[test]
    fn notes_from_outside_are_short_printable_ascii() {
        let note = printable(&format!("évil\n{}", "x".repeat(500)));
        assert!(note.starts_with("?vil?x"));
        assert_eq!(note.len(), MAX_NOTE);
    }
}
