//! Loading settings: defaults, then a TOML file, then environment variables, each overriding
//! the one before. Every process reads one file with a table per section (`[cluster]`,
//! `[core]`, `[business]`, and tables inside them such as `[core.gateway]`).
//!
//! Environment variables are named `IM_<SECTION>__<KEY>`, a double underscore between levels:
//! `IM_CLUSTER__TOKEN_SECRET`, `IM_CORE__GATEWAY__IDLE_TIMEOUT=90s`.
//!
//! - [`cluster`]: what every process of a deployment shares (node id, token secret, NATS,
//!   Redis).
//! - [`legacy`]: keys renamed in this release, still read (with a warning) for one release.
//! - [`live`]: settings that may change while the process runs, behind a watch.

pub mod cluster;
pub mod legacy;
pub mod live;

use std::path::Path;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
    value::{Dict, Value},
};
use serde::{Serialize, de::DeserializeOwned};

pub use cluster::ClusterSettings;
pub use legacy::{Rename, Unit};
pub use live::{Live, Reload, Reloadable, live};

/// Settings that could not be loaded, or that a service cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("settings: {0}")]
pub struct SettingsError(String);

impl SettingsError {
    /// A settings error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// A secret setting: never shown by `Debug`, and read from any scalar (an environment value
/// such as `123` or `true` is parsed as a number or a boolean before it reaches us).
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What `print-settings` shows: whether one is set, never what it is.
    pub fn hidden(&self) -> Self {
        Self(if self.0.is_empty() { "" } else { "<hidden>" }.to_owned())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<unset>"
        } else {
            "<hidden>"
        })
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Text(String),
            Signed(i64),
            Unsigned(u64),
            Float(f64),
            Flag(bool),
        }
        Ok(Self(match Scalar::deserialize(deserializer)? {
            Scalar::Text(text) => text,
            Scalar::Signed(n) => n.to_string(),
            Scalar::Unsigned(n) => n.to_string(),
            Scalar::Float(n) => n.to_string(),
            Scalar::Flag(b) => b.to_string(),
        }))
    }
}

/// Where a service keeps its data, from its `database` setting: a SQLite file path (the
/// embedded default), or a `postgres://` or `mysql://` URL (`mysql://` for MariaDB too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database<'a> {
    /// A SQLite file.
    Sqlite(&'a Path),
    /// A PostgreSQL URL.
    Postgres(&'a str),
    /// A MySQL or MariaDB URL.
    Mysql(&'a str),
}

impl<'a> Database<'a> {
    /// Reads a `database` setting.
    pub fn parse(setting: &'a str) -> Self {
        if setting.starts_with("postgres://") || setting.starts_with("postgresql://") {
            Self::Postgres(setting)
        } else if setting.starts_with("mysql://") {
            Self::Mysql(setting)
        } else {
            Self::Sqlite(Path::new(setting))
        }
    }
}

/// A database or service URL fit for messages and logs: its password is masked.
pub fn without_password(setting: &str) -> String {
    let (Some(scheme), Some(at)) = (setting.find("://"), setting.rfind('@')) else {
        return setting.to_owned();
    };
    match setting.get(scheme + 3..at).and_then(|c| c.split_once(':')) {
        Some((user, _)) if at > scheme => {
            format!("{}{user}:***{}", &setting[..scheme + 3], &setting[at..])
        }
        _ => setting.to_owned(),
    }
}

/// What the file and the environment say, every section, with renamed keys moved to their
/// new places.
#[derive(Debug, Clone)]
pub struct Config {
    tree: Dict,
}

impl Config {
    /// Reads the file at `path` (if any) and the `IM_` environment variables, then moves the
    /// keys `renames` lists (old ones still accepted) to their new names.
    pub fn load(path: Option<&Path>, renames: &[Rename]) -> Result<Self, SettingsError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                return Err(SettingsError(format!("{} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        // One provider for every section: IM_CORE__GATEWAY__IDLE_TIMEOUT is core.gateway.
        // idle_timeout. Variables of other tools that start with IM_ land at the top level,
        // where no section reads them.
        figment = figment.merge(Env::prefixed("IM_").split("__"));
        let mut tree: Dict = figment
            .extract()
            .map_err(|e| SettingsError(e.to_string()))?;
        for note in legacy::apply(&mut tree, renames)? {
            tracing::warn!("{note}");
        }
        Ok(Self { tree })
    }

    /// Settings made of `overrides` only (no file, no environment), for tests and embedders.
    pub fn from_value(overrides: impl Serialize) -> Result<Self, SettingsError> {
        let tree = Figment::from(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| SettingsError(e.to_string()))?;
        Ok(Self { tree })
    }

    /// Section `name` (`core`, `cluster`, ...) over `defaults`.
    pub fn section<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        defaults: &T,
    ) -> Result<T, SettingsError> {
        let mut figment = Figment::new().merge(Serialized::defaults(defaults));
        if let Some(Value::Dict(_, section)) = self.tree.get(name) {
            figment = figment.merge(Serialized::defaults(section));
        }
        figment
            .extract()
            .map_err(|e| SettingsError(format!("[{name}]: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        listen: String,
        limit: u32,
        secret: Secret,
        #[serde(with = "humantime_serde")]
        wait: std::time::Duration,
    }

    fn defaults() -> Sample {
        Sample {
            listen: "127.0.0.1:1".into(),
            limit: 1,
            secret: Secret::default(),
            wait: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn database_settings_name_their_backend() {
        assert_eq!(
            Database::parse("data/messages.db"),
            Database::Sqlite(Path::new("data/messages.db"))
        );
        let pg = "postgres://im@db:5432/im";
        assert_eq!(Database::parse(pg), Database::Postgres(pg));
        let my = "mysql://im@db:3306/im";
        assert_eq!(Database::parse(my), Database::Mysql(my));
        assert_eq!(
            without_password("postgres://im:s3cret@db:5432/im"),
            "postgres://im:***@db:5432/im"
        );
        assert_eq!(without_password(my), my, "no password, nothing masked");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own test harness returns its error type.
    fn file_then_environment_override_the_defaults() {
        figment::Jail::expect_with(|jail| {
            let file =
                "[sample]\nlimit = 7\nsecret = \"from file\"\nwait = \"90s\"\n[other]\nlimit = 9\n";
            jail.create_file("im.toml", file)?;
            jail.set_env("IM_SAMPLE__SECRET", "from env");
            let config = Config::load(Some(Path::new("im.toml")), &[]).unwrap();
            let loaded: Sample = config.section("sample", &defaults()).unwrap();
            let expected = Sample {
                listen: "127.0.0.1:1".into(),
                limit: 7,
                secret: "from env".into(),
                wait: std::time::Duration::from_secs(90),
            };
            assert_eq!(loaded, expected);
            assert!(
                !format!("{loaded:?}").contains("from env"),
                "Debug hides secrets"
            );
            jail.set_env("IM_SAMPLE__SECRET", "12345");
            let numeric: Sample = Config::load(None, &[])
                .unwrap()
                .section("sample", &defaults())
                .unwrap();
            assert_eq!(
                numeric.secret.expose(),
                "12345",
                "a numeric secret stays text"
            );
            let missing = Config::load(Some(Path::new("missing.toml")), &[]);
            assert!(missing.unwrap_err().to_string().contains("missing.toml"));
            jail.set_env("IM_SAMPLE__LIMIT", "not a number");
            let bad = Config::load(None, &[])
                .unwrap()
                .section("sample", &defaults());
            assert!(bad.is_err(), "a bad value is an error");
            jail.set_env("IM_SAMPLE__LIMIT", "3");
            jail.set_env("IM_SAMPLE__LIMT", "3");
            let typo = Config::load(None, &[])
                .unwrap()
                .section("sample", &defaults());
            assert!(
                typo.unwrap_err().to_string().contains("limt"),
                "an unknown key is named"
            );
            Ok(())
        });
    }
}
