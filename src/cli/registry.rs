//! `aelabel models …`, `aelabel db migrate`, and the registry step of `aelabel pipeline`.

use crate::config::aelabel_home;
use crate::model::Model;
use crate::store::{default_database_url, ModelRecord, NewModel, Registered, Store};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// Which registry database to use.
#[derive(Clone, Debug, Default, Args)]
pub struct DatabaseArgs {
    /// The registry database: `sqlite://PATH` or `postgres://USER[:PASSWORD]@HOST:PORT/DB`
    /// [default: the SQLite file aelabel.db in AELABEL_HOME].
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The URL given, or the embedded SQLite default.
    pub fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| default_database_url(&aelabel_home()))
    }
}

/// `aelabel models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Database flags.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// The registry's commands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every registered model, newest first; `*` marks the active one.
    List {
        /// Print a JSON array (keys include version, active, created_at, test_accuracy, path,
        /// sha256).
        #[arg(long)]
        json: bool,
    },
    /// One model's whole record, as JSON.
    Show {
        /// The model version.
        version: String,
    },
    /// Serve this version from now on: running servers switch within seconds.
    Activate {
        /// The model version.
        version: String,
    },
    /// Re-activate the version that was active before the current one.
    Rollback,
    /// Register an existing model.safetensors (e.g. one trained with --no-register).
    Register {
        /// The model file.
        path: PathBuf,
    },
}

/// `aelabel db`.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Database flags.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: DbCommand,
}

/// Database maintenance.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the schema or bring it up to date (every command also does this on connect).
    Migrate,
}

/// Runs `aelabel db …`.
pub async fn db_command(args: DbArgs) -> anyhow::Result<()> {
    match args.command {
        DbCommand::Migrate => {
            let store = Store::connect(&args.db.url()).await?;
            println!("database {} is up to date", store.url());
            store.close().await;
            Ok(())
        }
    }
}

/// Runs `aelabel models …`.
pub async fn models_command(args: ModelsArgs) -> anyhow::Result<()> {
    let store = Store::connect(&args.db.url()).await?;
    match args.command {
        ModelsCommand::List { json } => {
            let models = store.models().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&models)?);
            } else {
                print_table(&models);
            }
        }
        ModelsCommand::Show { version } => {
            let model = store.model(&version).await?;
            println!("{}", serde_json::to_string_pretty(&model)?);
        }
        ModelsCommand::Activate { version } => {
            let model = store.activate(&version).await?;
            println!("active: {}", model.version);
        }
        ModelsCommand::Rollback => {
            let model = store.rollback().await?;
            println!("active: {}", model.version);
        }
        ModelsCommand::Register { path } => {
            let line = register(&store, &path).await?;
            println!("{line}");
        }
    }
    store.close().await;
    Ok(())
}

/// Registers the checkpoint at `path` (checksum taken from the bytes loaded) and says what
/// happened in one line.
pub async fn register(store: &Store, path: &Path) -> anyhow::Result<String> {
    let path =
        std::fs::canonicalize(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = path.clone();
    let (model, sha256) = tokio::task::spawn_blocking(move || Model::load_with_sha256(&file))
        .await
        .context("model loading stopped")??;
    let record = NewModel::from_checkpoint(&model.meta, path, sha256);
    let outcome = store.register_model(&record).await?;
    Ok(registered_line(outcome, &record.version, store))
}

/// The line that tells how the registry took `version`.
pub fn registered_line(outcome: Registered, version: &str, store: &Store) -> String {
    match outcome {
        Registered::New { active: true } => {
            format!(
                "registered model {version}: active (the first in {})",
                store.url()
            )
        }
        Registered::New { active: false } => {
            format!("registered model {version}; serve it with `aelabel models activate {version}`")
        }
        Registered::Existing => {
            format!("model {version} was already registered: its path and checksum are updated")
        }
    }
}

fn print_table(models: &[ModelRecord]) {
    if models.is_empty() {
        println!("no models registered yet: train one with `aelabel pipeline`");
        return;
    }
    let width = models.iter().map(|m| m.version.len()).max().unwrap_or(7);
    println!(
        "  {:width$}  {:24}  {:>9}  PATH",
        "VERSION", "CREATED (UTC)", "TEST ACC"
    );
    for m in models {
        let accuracy = m
            .test_accuracy
            .map_or_else(|| "–".into(), |a| format!("{:.2} %", 100.0 * a));
        println!(
            "{} {:width$}  {:24}  {:>9}  {}",
            if m.active { '*' } else { ' ' },
            m.version,
            m.created_at,
            accuracy,
            m.path.display()
        );
    }
}
