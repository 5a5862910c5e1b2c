//! Persistence: the model registry and label jobs in SQLite or PostgreSQL.
//!
//! All SQL lives in this module; the rest of the code sees typed functions on [`Store`].
//! One code path serves both databases through sqlx's `Any` driver: the queries use the
//! dialect subset both understand (`$1` placeholders, `TEXT`, `BIGINT`, `DOUBLE PRECISION`),
//! and the migrations in `migrations/` are embedded in the binary and run on connect.

mod job_add;
mod job_counts;
mod job_images;
mod job_rounds;
mod jobs;
mod models;
mod training;

pub use job_add::ArrivalLabels;
pub use job_images::ReviewedImage;
pub use job_rounds::{JobModel, JobPile, PileItem, Relabel};
pub use models::{ModelRecord, NewModel, Registered};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The migrations in `migrations/`, compiled in.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a query waits for a free or new connection before reporting the database down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The most memory SQLite's page cache may take per connection, in KiB.
const SQLITE_CACHE_KIB: u32 = 32 << 10;

/// Read connections to a SQLite file besides its one writer.
const SQLITE_READERS: u32 = 3;

/// The page cache of each SQLite read connection, in KiB.
const SQLITE_READER_CACHE_KIB: u32 = 8 << 10;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the connection.
    #[error(
        "cannot connect to the database at {url}: {source}; check --database-url / DATABASE_URL"
    )]
    Connect {
        /// The URL with any password replaced by `***`.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The URL is not one aelabel can use.
    #[error("`{url}` is not a database URL aelabel can use: {reason}")]
    BadUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the database at {url}: {source}")]
    Migrate {
        /// The URL with any password replaced by `***`.
        url: String,
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed (the database went away, a constraint was broken, ...).
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// No model has this version.
    #[error("no model version `{0}` is registered; `aelabel models list` shows the versions")]
    UnknownVersion(String),
    /// The registry holds no model yet.
    #[error("no model is registered yet; train one with `aelabel pipeline`")]
    Empty,
    /// Rollback needs an earlier activation of another version.
    #[error("there is no earlier active version to roll back to (active: {0})")]
    NothingToRollBack(String),
    /// No label job has this id.
    #[error("no label job has the id `{0}`")]
    UnknownJob(String),
    /// The job holds no item with this client id.
    #[error("label job `{job_id}` holds no item with the id `{item_id}`")]
    UnknownItem {
        /// The job.
        job_id: String,
        /// The client id asked for.
        item_id: String,
    },
    /// A review named a class the job does not have.
    #[error("{class} is not one of the job's classes ({})", classes.join(", "))]
    UnknownClass {
        /// The class as the reviewer gave it.
        class: String,
        /// The job's class names.
        classes: Vec<String>,
    },
    /// A stored job value could not be read back.
    #[error("label job `{job_id}` holds a malformed {what}: {reason}")]
    MalformedJob {
        /// The job.
        job_id: String,
        /// Which column.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No training run has this id.
    #[error("no training run has the id `{0}`")]
    UnknownRun(String),
    /// A stored training run could not be read back.
    #[error("training run `{run_id}` holds a malformed {reason}")]
    MalformedRun {
        /// The run.
        run_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored value could not be read back.
    #[error("the registry holds a malformed {what} for model `{version}`: {reason}")]
    Malformed {
        /// The model.
        version: String,
        /// Which column.
        what: &'static str,
        /// The parse error.
        reason: String,
    },
}

/// Which database a [`Store`] talks to, for the few statements whose best form differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (one writer at a time).
    Sqlite,
    /// A PostgreSQL server (row locks, `FOR UPDATE SKIP LOCKED`).
    Postgres,
}

/// A connection pool to the registry database, schema up to date.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Where reads go: on SQLite a few connections of their own (WAL readers never wait for
    /// the one writer), on Postgres the same pool.
    reads: AnyPool,
    url: String,
    backend: Backend,
}

/// The embedded default: a SQLite file `aelabel.db` in aelabel's home directory.
pub fn default_database_url(home: &Path) -> String {
    format!("sqlite://{}?mode=rwc", home.join("aelabel.db").display())
}

/// A SQLite `url` that creates its file when missing (`mode=rwc`), as the embedded default
/// does; sqlx opens an existing file only unless told otherwise. A URL naming its own `mode=`
/// keeps it.
fn sqlite_created_if_missing(url: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if query.split('&').any(|pair| pair.starts_with("mode=")) {
        url.to_string()
    } else if query.is_empty() {
        format!("{}?mode=rwc", url.trim_end_matches('?'))
    } else {
        format!("{url}&mode=rwc")
    }
}

/// `url` with the password (if any) replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and runs the migrations. A SQLite
    /// file and its folder are created if missing (unless the URL sets its own `mode=`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::open(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without touching the schema (the migrations run separately).
    async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let redacted = redact_url(url);
        let bad = |reason: String| StoreError::BadUrl {
            url: redacted.clone(),
            reason,
        };
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(bad(
                "it must start with sqlite:// or postgres:// (e.g. postgres://user@host:5432/db)"
                    .into(),
            ));
        }
        if sqlite {
            create_sqlite_folder(url).map_err(|e| bad(e.to_string()))?;
        }
        let url = if sqlite {
            sqlite_created_if_missing(url)
        } else {
            url.to_string()
        };
        let options = AnyConnectOptions::from_str(&url).map_err(|e| bad(e.to_string()))?;

        // SQLite serialises writers: one connection avoids "database is locked" between
        // this process's own tasks (other processes wait on the busy timeout).
        let pool = pool_options(sqlite, if sqlite { 1 } else { 8 }, SQLITE_CACHE_KIB)
            .connect_with(options.clone())
            .await
            .map_err(|source| StoreError::Connect {
                url: redacted.clone(),
                source,
            })?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let reads = if sqlite && !in_memory {
            pool_options(sqlite, SQLITE_READERS, SQLITE_READER_CACHE_KIB)
                .connect_with(options)
                .await
                .map_err(|source| StoreError::Connect {
                    url: redacted.clone(),
                    source,
                })?
        } else {
            pool.clone()
        };
        Ok(Self {
            pool,
            reads,
            url: redacted,
            backend: if sqlite {
                Backend::Sqlite
            } else {
                Backend::Postgres
            },
        })
    }

    /// Brings the schema up to date (idempotent; safe with several processes at once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: self.url.clone(),
                source,
            })?;
        if self.backend == Backend::Postgres {
            self.store_pixels_uncompressed().await?;
        }
        Ok(())
    }

    /// Stores pixel blobs out of line without compression (Postgres' `EXTERNAL`): compressing
    /// every batch with pglz cost more server time than inserting its items. Not part of the
    /// shared migrations because SQLite has no such setting; set once, checked on connect.
    async fn store_pixels_uncompressed(&self) -> Result<(), StoreError> {
        let storage: Option<String> = sqlx::query(
            "SELECT CAST(attstorage AS TEXT) FROM pg_attribute \
             WHERE attrelid = CAST('image_batches' AS regclass) AND attname = 'pixels'",
        )
        .fetch_optional(&self.pool)
        .await?
        .map(|row| sqlx::Row::try_get(&row, 0))
        .transpose()?;
        if storage.as_deref() != Some("e") {
            sqlx::query("ALTER TABLE image_batches ALTER COLUMN pixels SET STORAGE EXTERNAL")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The pool reads go through (see [`Store::reads`] field).
    fn reads(&self) -> &AnyPool {
        &self.reads
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A transaction that will write. On SQLite it takes the write lock at `BEGIN IMMEDIATE`:
    /// a deferred transaction that reads first and then writes fails at once with "database is
    /// locked" if another connection wrote in between, whereas an immediate one waits its turn
    /// (busy timeout) like any writer.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// The database URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes every connection (waits for those in use).
    pub async fn close(&self) {
        self.reads.close().await;
        self.pool.close().await;
    }
}

/// Pool settings for `max_connections` connections; SQLite connections are set up for WAL
/// with a page cache of `cache_kib` KiB each.
fn pool_options(sqlite: bool, max_connections: u32, cache_kib: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    // WAL: readers do not block the writer, and a commit appends to the
                    // log instead of rewriting pages; NORMAL syncs at checkpoints, which
                    // in WAL mode still survives a crash of the process (not of the
                    // machine's power) with every committed transaction.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    // More pages in memory than SQLite's default 2 MiB: the writer's
                    // indexes of a large job stay cached between inserts.
                    sqlx::query(&format!("PRAGMA cache_size = -{cache_kib}"))
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
}

/// Creates the folder of a `sqlite://path?…` URL's file, so a fresh `AELABEL_HOME` works.
fn create_sqlite_folder(url: &str) -> std::io::Result<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    match Path::new(path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::{redact_url, sqlite_created_if_missing};

    #[test]
    fn a_sqlite_url_creates_its_file_unless_it_sets_a_mode() {
        assert_eq!(
            sqlite_created_if_missing("sqlite:///tmp/a.db"),
            "sqlite:///tmp/a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_created_if_missing("sqlite:///tmp/a.db?cache=shared"),
            "sqlite:///tmp/a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            sqlite_created_if_missing("sqlite:///tmp/a.db?mode=ro"),
            "sqlite:///tmp/a.db?mode=ro"
        );
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/aelabel?sslmode=disable"),
            "postgres://app:***@db:5432/aelabel?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }
}
