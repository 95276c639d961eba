//! Loading settings: defaults, then a TOML file, then environment variables, each overriding
//! the one before. Every service uses the same shape: a table per service in one file.
//!
//! Environment variables are named `IM_<SECTION>__<KEY>` (double underscore between levels),
//! e.g. `IM_BUSINESS__APP_SECRET`.

use std::path::Path;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Serialize, de::DeserializeOwned};

/// Settings that could not be loaded.
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

/// A database setting fit for messages and logs: a URL's password is masked.
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

/// The bus every service of a deployment shares: section `[bus]`, `IM_BUS__<KEY>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSettings {
    /// The NATS server(s), `nats://host:port` (comma-separated for several). Empty: the
    /// services of one process share an in-process bus.
    pub nats_url: String,
}

/// Loads section `section` (e.g. `business`) of the file at `path` (if any) over `defaults`,
/// then applies `IM_<SECTION>__<KEY>` environment variables.
pub fn load<T: Serialize + DeserializeOwned>(
    section: &str,
    defaults: &T,
    path: Option<&Path>,
) -> Result<T, SettingsError> {
    let mut figment = Figment::new().merge(Serialized::defaults(defaults));
    if let Some(path) = path {
        if !path.exists() {
            return Err(SettingsError(format!("{} does not exist", path.display())));
        }
        figment = figment.merge(Figment::from(Toml::file(path)).focus(section));
    }
    let prefix = format!("IM_{}__", section.to_uppercase());
    figment = figment.merge(Env::prefixed(&prefix).split("__"));
    figment.extract().map_err(|e| SettingsError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        listen: String,
        limit: u32,
        secret: Secret,
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
        let defaults = Sample {
            listen: "127.0.0.1:1".into(),
            limit: 1,
            secret: Secret::default(),
        };
        figment::Jail::expect_with(|jail| {
            let file = "[sample]\nlimit = 7\nsecret = \"from file\"\n[other]\nlimit = 9\n";
            jail.create_file("im.toml", file)?;
            jail.set_env("IM_SAMPLE__SECRET", "from env");
            let loaded = load("sample", &defaults, Some(Path::new("im.toml"))).unwrap();
            let expected = Sample {
                listen: "127.0.0.1:1".into(),
                limit: 7,
                secret: "from env".into(),
            };
            assert_eq!(loaded, expected);
            assert!(
                !format!("{loaded:?}").contains("from env"),
                "Debug hides secrets"
            );
            jail.set_env("IM_SAMPLE__SECRET", "12345");
            let numeric = load("sample", &defaults, None).unwrap();
            assert_eq!(
                numeric.secret.expose(),
                "12345",
                "a numeric secret stays text"
            );
            let missing = load("sample", &defaults, Some(Path::new("missing.toml")));
            assert!(missing.unwrap_err().to_string().contains("missing.toml"));
            jail.set_env("IM_SAMPLE__LIMIT", "not a number");
            assert!(
                load("sample", &defaults, None).is_err(),
                "a bad value is an error"
            );
            Ok(())
        });
    }
}
