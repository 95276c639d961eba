//! Keys renamed in this release: each service lists its renames, and a file or environment that
//! still uses an old name is read as if it used the new one, with a warning naming both. An old
//! key and its new key both set to different values is an error: which one meant what cannot be
//! guessed. Old names are accepted for one release.

use figment::value::{Dict, Num, Tag, Value};

use super::SettingsError;

/// How an old value becomes a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// As it is.
    Same,
    /// A number of milliseconds (`idle_timeout_ms = 90000`) becomes a duration (`"90000ms"`).
    Millis,
    /// A number of seconds becomes a duration.
    Seconds,
}

/// An old key (dotted: `core.idle_timeout_ms`) and where it went (`core.gateway.idle_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rename {
    /// The old key.
    pub from: &'static str,
    /// The new key.
    pub to: &'static str,
    /// How its value converts.
    pub unit: Unit,
}

impl Rename {
    /// A key that moved, its value unchanged.
    pub const fn moved(from: &'static str, to: &'static str) -> Self {
        Self {
            from,
            to,
            unit: Unit::Same,
        }
    }

    /// A number of milliseconds that became a duration.
    pub const fn millis(from: &'static str, to: &'static str) -> Self {
        Self {
            from,
            to,
            unit: Unit::Millis,
        }
    }

    /// A number of seconds that became a duration.
    pub const fn seconds(from: &'static str, to: &'static str) -> Self {
        Self {
            from,
            to,
            unit: Unit::Seconds,
        }
    }
}

/// The environment variable of a dotted key.
fn env_name(key: &str) -> String {
    format!("IM_{}", key.to_uppercase().replace('.', "__"))
}

/// Moves every old key found in `tree` to its new name; returns a warning for each.
pub(super) fn apply(tree: &mut Dict, renames: &[Rename]) -> Result<Vec<String>, SettingsError> {
    let mut notes = Vec::new();
    for rename in renames {
        let Some(old) = take(tree, rename.from) else {
            continue;
        };
        let new = convert(&old, rename)?;
        match get(tree, rename.to) {
            Some(existing) if !same(existing, &new) => {
                return Err(SettingsError::new(format!(
                    "{} (the old name of {}) and {} are both set, to different values: keep {}",
                    rename.from, rename.to, rename.to, rename.to
                )));
            }
            Some(_) => {}
            None => put(tree, rename.to, new),
        }
        notes.push(format!(
            "settings: {} ({}) is now {} ({}); the old name is read for one more release",
            rename.from,
            env_name(rename.from),
            rename.to,
            env_name(rename.to)
        ));
    }
    Ok(notes)
}

fn convert(old: &Value, rename: &Rename) -> Result<Value, SettingsError> {
    let suffix = match rename.unit {
        Unit::Same => return Ok(old.clone()),
        Unit::Millis => "ms",
        Unit::Seconds => "s",
    };
    let number = match old {
        Value::Num(_, num) => num.to_u128_lossy().map(|n| n.to_string()),
        Value::String(_, text) => text.trim().parse::<u64>().ok().map(|n| n.to_string()),
        _ => None,
    };
    let number = number.ok_or_else(|| {
        SettingsError::new(format!(
            "{} must be a whole number (of {}); or set {} as a duration such as \"90s\"",
            rename.from,
            if suffix == "ms" {
                "milliseconds"
            } else {
                "seconds"
            },
            rename.to
        ))
    })?;
    Ok(Value::String(Tag::Default, format!("{number}{suffix}")))
}

/// Whether two values say the same (a number from the environment and one from a file do).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Num(_, x), Value::Num(_, y)) => num(*x) == num(*y),
        (Value::Dict(_, x), Value::Dict(_, y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::String(_, x), Value::String(_, y)) => x == y,
        (Value::Bool(_, x), Value::Bool(_, y)) => x == y,
        _ => value_text(a) == value_text(b),
    }
}

/// A number as text, whatever its width and sign.
fn num(n: Num) -> String {
    n.to_u128_lossy()
        .map(|n| n.to_string())
        .or_else(|| n.to_i128().map(|n| n.to_string()))
        .or_else(|| n.to_f64().map(|n| n.to_string()))
        .unwrap_or_default()
}

fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(_, text) => Some(text.clone()),
        Value::Num(_, n) => Some(num(*n)),
        Value::Bool(_, b) => Some(b.to_string()),
        Value::Char(_, c) => Some(c.to_string()),
        _ => None,
    }
}

fn get<'a>(tree: &'a Dict, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let mut value = tree.get(parts.next()?)?;
    for part in parts {
        match value {
            Value::Dict(_, dict) => value = dict.get(part)?,
            _ => return None,
        }
    }
    Some(value)
}

fn take(tree: &mut Dict, key: &str) -> Option<Value> {
    match key.split_once('.') {
        None => tree.remove(key),
        Some((head, rest)) => match tree.get_mut(head)? {
            Value::Dict(_, dict) => take(dict, rest),
            _ => None,
        },
    }
}

fn put(tree: &mut Dict, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            tree.insert(key.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = tree
                .entry(head.to_owned())
                .or_insert_with(|| Value::Dict(Tag::Default, Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::Dict(Tag::Default, Dict::new());
            }
            if let Value::Dict(_, dict) = entry {
                put(dict, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(toml: &str) -> Dict {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(toml))
            .extract()
            .unwrap_or_default()
    }

    const RENAMES: &[Rename] = &[
        Rename::millis("core.idle_timeout_ms", "core.gateway.idle_timeout"),
        Rename::moved("core.token_secret", "cluster.token_secret"),
        Rename::moved("business.token_secret", "cluster.token_secret"),
    ];

    #[test]
    fn old_keys_are_read_under_their_new_names() {
        let mut moved = tree("[core]\nidle_timeout_ms = 90000\ntoken_secret = \"s\"\n");
        let notes = apply(&mut moved, RENAMES).unwrap();
        assert_eq!(notes.len(), 2);
        assert!(
            notes[0].contains("IM_CORE__IDLE_TIMEOUT_MS")
                && notes[0].contains("IM_CORE__GATEWAY__IDLE_TIMEOUT")
        );
        assert_eq!(
            get(&moved, "core.gateway.idle_timeout")
                .and_then(value_text)
                .as_deref(),
            Some("90000ms")
        );
        assert!(
            get(&moved, "core.idle_timeout_ms").is_none(),
            "the old key is gone"
        );
        assert_eq!(
            get(&moved, "cluster.token_secret")
                .and_then(value_text)
                .as_deref(),
            Some("s")
        );
    }

    #[test]
    fn an_old_key_and_its_new_key_must_agree() {
        let mut agreeing = tree("[core]\ntoken_secret = \"s\"\n[business]\ntoken_secret = \"s\"\n");
        assert!(apply(&mut agreeing, RENAMES).is_ok());
        let mut differing =
            tree("[core]\ntoken_secret = \"a\"\n[business]\ntoken_secret = \"b\"\n");
        let error = apply(&mut differing, RENAMES).unwrap_err().to_string();
        assert!(error.contains("business.token_secret"), "{error}");
        let mut bad = tree("[core]\nidle_timeout_ms = \"soon\"\n");
        assert!(
            apply(&mut bad, RENAMES)
                .unwrap_err()
                .to_string()
                .contains("whole number")
        );
    }
}
