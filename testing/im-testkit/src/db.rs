//! A fresh database on a real server, so that a suite's tests share nothing: created under a
//! random name, its URL returned (the server is the one `scripts/services start` runs).

use diesel_async::{
    AsyncConnection, AsyncMysqlConnection, AsyncPgConnection, SimpleAsyncConnection,
};

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    format!("{base}/{name}")
}

fn fresh_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A new, empty PostgreSQL database on the server of `url`; its URL.
pub async fn fresh_postgres(url: &str, prefix: &str) -> String {
    let name = fresh_name(prefix);
    let mut admin = AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("connects to {url}: {e}"));
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("creates {name}: {e}"));
    with_database(url, &name)
}

/// A new, empty MySQL/MariaDB database (utf8mb4) on the server of `url`; its URL.
pub async fn fresh_mysql(url: &str, prefix: &str) -> String {
    let name = fresh_name(prefix);
    let mut admin = AsyncMysqlConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("connects to {url}: {e}"));
    admin
        .batch_execute(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        .await
        .unwrap_or_else(|e| panic!("creates {name}: {e}"));
    with_database(url, &name)
}
