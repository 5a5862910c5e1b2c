//! Throwaway registry databases: a SQLite file in a temporary folder, or a fresh database on
//! the tests' PostgreSQL that is dropped when the test ends, pass or fail. The server is the
//! one at `AELABEL_TEST_POSTGRES` (an admin URL, trust auth; default
//! `postgres://postgres@127.0.0.1:5432/postgres`): every test takes its address from here, and
//! `.ci/with-postgres` starts a private one there when none answers.

#![allow(dead_code)]

use sqlx::Connection;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The admin connection tests create their databases through.
pub fn postgres_admin_url() -> String {
    std::env::var("AELABEL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The host and port of [`postgres_admin_url`]'s server (5432 when the URL names none), for
/// tests that put a proxy in front of it.
pub fn postgres_server_addr() -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let admin = postgres_admin_url();
    let (_, rest) = admin
        .split_once("://")
        .unwrap_or_else(|| panic!("the admin URL {admin} has no scheme"));
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // `[::1]:5433`, `[::1]`, `host:5433` or `host`.
    let with_port = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => host_port.to_string(),
        _ => format!("{host_port}:5432"),
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("the admin URL {admin} names no reachable host:port"))
}

/// A database that exists for one test.
pub struct TestDb {
    /// URL to give aelabel.
    pub url: String,
    backend: Backend,
}

enum Backend {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { name: String },
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    /// A SQLite file in a new temporary folder.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("aelabel.db").display()
        );
        Self {
            url,
            backend: Backend::Sqlite(dir),
        }
    }

    /// A new, empty Postgres database with a unique name.
    pub async fn postgres() -> Self {
        let name = format!(
            "aelabel_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let admin = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} must be running for this test: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("the admin URL {admin} names no database"),
        };
        Self {
            url,
            backend: Backend::Postgres { name },
        }
    }

    /// The URL with its host and port replaced by `addr` (to route through a proxy).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').expect("a database path");
        let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!("{scheme}://{}{addr}/{path}", user.unwrap_or_default())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Backend::Postgres { name } = &self.backend else {
            return;
        };
        let name = name.clone();
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
