//! What tests against real services share.

/// The URL of a real service the tests need, from the environment variable `var` (as
/// `scripts/services start` prints them). Without it a test skips, saying so loudly; in CI
/// (`CI` set) it fails instead, since `.ci/run` starts every service.
pub fn service_url(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set in CI: scripts/services start must run first")
        }
        _ => {
            eprintln!("SKIPPED: {what} needs {var} (eval \"$(scripts/services start)\")");
            None
        }
    }
}
