//! The command line's shape (clap derive): every command, option and help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::exit;

const EXAMPLES: &str = "Examples:
  pgdbm migrate apply --all             apply every module of pgdbm.toml, dependencies first
  pgdbm migrate status --check          exit 3 if anything is pending or drifted (for CI)
  pgdbm db reset --yes                  drop, create and migrate the database DATABASE_URL names
  pgdbm prepare --check                 check .sqlx/ against a scratch database (no server needed)
  pgdbm prepare --check-compat v1.4.0   would the v1.4.0 queries survive the current migrations?
  pgdbm completions bash > /etc/bash_completion.d/pgdbm

The database comes from DATABASE_URL (the environment or .env), else from pgdbm.toml's
[environments.NAME] (--env, else [project] default_env). Modules come from pgdbm.toml (here or in
a parent directory; --config FILE), or from --dir and --schema.";

/// The pgdbm command line.
#[derive(Debug, Parser)]
#[command(
    name = "pgdbm",
    version,
    about = "Migrations, databases, tenants and sqlx's offline data for pgdbm services",
    after_help = format!("{EXAMPLES}\n\n{}", exit::HELP),
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The project file (default: pgdbm.toml here or in a parent directory, up to the workspace root)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Connect to pgdbm.toml's [environments.NAME] instead of DATABASE_URL
    #[arg(long, global = true, value_name = "NAME")]
    pub env: Option<String>,
    /// Print JSON (status, pending, history, verify, tenants list and migrate, test-server status,
    /// inspect, prepare --check-compat)
    #[arg(long, global = true)]
    pub json: bool,
    /// When to colour the output [auto: on a terminal, unless NO_COLOR is set]
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    pub color: ColorWhen,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply, inspect, repair and revert migrations
    #[command(after_help = MIGRATE_EXAMPLES)]
    Migrate(MigrateCommand),
    /// Create, drop or reset the database DATABASE_URL names
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// One schema per tenant on one database: list, create, migrate, drop
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// The throwaway PostgreSQL server the tests start when no other server is found
    TestServer {
        #[command(subcommand)]
        command: TestServerCommand,
    },
    /// Test databases: clean up what killed test runs left behind
    Test {
        #[command(subcommand)]
        command: TestCommand,
    },
    /// Look into the running database: a statement's plan, lock waits, long-running queries,
    /// table sizes, a health report
    #[command(after_help = INSPECT_EXAMPLES)]
    Inspect {
        #[command(subcommand)]
        command: InspectCommand,
    },
    /// Refresh (or --check) sqlx's offline data in .sqlx/ against a scratch database migrated as
    /// pgdbm.toml says, or check a previous release's queries against the current migrations
    /// (--check-compat); without DATABASE_URL it uses the throwaway server
    #[command(after_help = "Examples:
  pgdbm prepare                        write .sqlx/ for the workspace's queries (needs `cargo sqlx`)
  pgdbm prepare --check                exit with sqlx's status: non-zero if .sqlx/ is out of date
  pgdbm prepare --check-compat v1.4.0  exit 1 if a query of tag v1.4.0's .sqlx/ breaks on the
                                       current migrations (rolling deploys: old replicas run it)
  pgdbm prepare --check-compat ../release/.sqlx
                                       the same from a directory (a .sqlx/ or a checkout)
  pgdbm prepare --check-compat v1.4.0 --new-against-old
                                       exit 1 if a query of this .sqlx/ breaks on v1.4.0's schema
                                       (code deployed before its migrations)")]
    Prepare(PrepareArgs),
    /// Print a completion script for a shell
    #[command(after_help = "Example:\n  pgdbm completions zsh > ~/.zfunc/_pgdbm")]
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const MIGRATE_EXAMPLES: &str = "Examples:
  pgdbm migrate apply --all                    every module of pgdbm.toml, dependencies first
  pgdbm migrate status --module billing --json
  pgdbm migrate apply --dir migrations --schema myservice --module myservice
  pgdbm migrate repair 001_create_users.sql --dry-run
  pgdbm migrate baseline --to 002
  pgdbm migrate revert --steps 1
  pgdbm migrate drift --all --tenants          exit 1 if a schema was changed by hand
  pgdbm migrate create \"add posts\"
  pgdbm migrate lint --all --json              lint every module's files, no database needed";

/// `pgdbm migrate …`.
#[derive(Debug, Args)]
pub struct MigrateCommand {
    #[command(subcommand)]
    pub action: MigrateAction,
    #[command(flatten)]
    pub modules: ModuleArgs,
}

/// Which module(s) a migrate command acts on, and how.
#[derive(Clone, Debug, Default, Args)]
pub struct ModuleArgs {
    /// One module of pgdbm.toml (default: its top-level module; every module if it has none)
    #[arg(long, global = true, value_name = "NAME")]
    pub module: Option<String>,
    /// Every module of pgdbm.toml, in depends_on order (revert: dependents first)
    #[arg(long, global = true, conflicts_with_all = ["module", "dir", "schema"])]
    pub all: bool,
    /// The migrations directory (instead of pgdbm.toml's)
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The schema (instead of pgdbm.toml's; default DB_SCHEMA)
    #[arg(long, global = true, value_name = "NAME")]
    pub schema: Option<String>,
    /// The history table (default: pgdbm.toml's [database] migrations_table, else schema_migrations)
    #[arg(long, global = true, value_name = "NAME")]
    pub table: Option<String>,
    /// Seconds to wait for another runner's lock
    #[arg(long, global = true, value_name = "SECONDS")]
    pub lock_timeout: Option<f64>,
    /// Seconds each migration statement may wait for a table lock before its file is rolled
    /// back and retried (default 2; 0 waits as long as it takes)
    #[arg(long, global = true, value_name = "SECONDS")]
    pub ddl_lock_timeout: Option<f64>,
    /// How many times a file is tried when it keeps running into --ddl-lock-timeout (default 8)
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub ddl_lock_attempts: Option<u32>,
    /// Accept history rows whose file is gone
    #[arg(long, global = true)]
    pub allow_missing: bool,
    /// Lock per file in a transaction (behind PgBouncer in transaction mode)
    #[arg(long, global = true, conflicts_with = "direct")]
    pub transaction_pooler: bool,
    /// Hold a session lock for the run (a direct connection) even if the host looks like a pooler
    #[arg(long, global = true)]
    pub direct: bool,
}

/// The migrate subcommands.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply pending migrations
    Apply {
        /// Show what would be applied, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Every file and history row with its state
    Status {
        /// Exit 3 if any file is pending, modified or missing
        #[arg(long)]
        check: bool,
    },
    /// The files not applied yet
    Pending,
    /// What `apply` would do, changing nothing
    DryRun,
    /// The newest history rows
    History {
        /// How many rows
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Check the applied files' checksums
    Verify,
    /// Forget that FILE was applied (it runs again next time; its changes stay)
    MarkUnapplied {
        /// The file name, as `status` lists it
        file: String,
    },
    /// Accept FILE's new checksum after a deliberate change (a comment, a reformat)
    Repair {
        /// The file name, as `status` lists it
        file: String,
        /// Show the change, make none
        #[arg(long)]
        dry_run: bool,
    },
    /// Record files as applied without running them (a database that predates pgdbm)
    Baseline {
        /// The last version to record (default: every file)
        #[arg(long, value_name = "VERSION")]
        to: Option<u128>,
        /// Show what would be recorded, record nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Undo applied files with their down files (down/NNN_name.down.sql), newest first
    Revert {
        /// Revert everything above this version
        #[arg(long, value_name = "VERSION", conflicts_with = "steps")]
        to: Option<u128>,
        /// Revert the newest N files [default: 1]
        #[arg(long, value_name = "N")]
        steps: Option<usize>,
        /// Show what would be reverted, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Lint the migration files (no database): statements that lock or rewrite a table in use,
    /// each with its file:line:column, rule and safe rewrite; exit 1 unless every finding is
    /// allowed by a `-- pgdbm:lint-allow RULE reason` line above it
    Lint,
    /// Compare the live schema (with --tenants, every tenant's too) with a shadow database
    /// migrated from the same files: tables, columns, indexes, constraints, sequences, views,
    /// functions, triggers and types; exit 1 if anything was added, dropped or changed by hand
    #[command(after_help = "Examples:
  pgdbm migrate drift                        the module's schema, against a scratch database on
                                             the throwaway server (made and dropped)
  pgdbm migrate drift --all --tenants        every module of pgdbm.toml and every tenant
  pgdbm migrate drift --shadow-url postgresql://localhost/shadow --json")]
    Drift {
        /// Also compare every tenant of the module(s) (the module's own schema is skipped when
        /// nothing was ever applied to it)
        #[arg(long)]
        tenants: bool,
        /// The shadow database: an empty database (or one drift migrated before), migrated with
        /// the files and left as it is [default: a scratch database on the throwaway server,
        /// dropped afterwards]
        #[arg(long, value_name = "URL")]
        shadow_url: Option<String>,
    },
    /// Write the next migration file, NNN_name.sql (with --repeatable: repeatable/name.sql)
    Create {
        /// A short description, e.g. "add posts"
        name: String,
        /// Write a repeatable file, applied again whenever it changes (views, functions,
        /// grants): repeatable/name.sql, run in name order (start the name with a number)
        #[arg(long)]
        repeatable: bool,
    },
}

/// `pgdbm db …`: the database DATABASE_URL (or --env) names, through the server's `postgres`
/// database with the same credentials.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the database DATABASE_URL names (nothing to do if it exists)
    Create,
    /// Drop the database DATABASE_URL names (nothing to do if it does not exist)
    #[command(after_help = "Examples:
  pgdbm db drop --yes            refused while other sessions are connected
  pgdbm db drop --yes --force    end those sessions first (DROP DATABASE … WITH (FORCE))")]
    Drop {
        /// Really drop it
        #[arg(long, action = ArgAction::SetTrue)]
        yes: bool,
        /// End the other sessions connected to it instead of refusing
        #[arg(long, action = ArgAction::SetTrue)]
        force: bool,
    },
    /// Drop, create and migrate (every module of pgdbm.toml) the database DATABASE_URL names
    Reset {
        /// Really drop it
        #[arg(long, action = ArgAction::SetTrue)]
        yes: bool,
        /// End the other sessions connected to it instead of refusing
        #[arg(long, action = ArgAction::SetTrue)]
        force: bool,
        #[command(flatten)]
        modules: ModuleArgs,
    },
}

/// `pgdbm tenants …`.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// The tenants in the registry, by name (every one, read a page at a time; or one page with
    /// --limit)
    #[command(after_help = "Examples:
  pgdbm tenants list                           every tenant
  pgdbm tenants list --limit 100               the first 100; the next command is printed on stderr
  pgdbm tenants list --limit 100 --after acme  the 100 after `acme`")]
    List {
        /// Print at most N tenants (one page) and, when more follow, the command for the next
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        /// Start after this name (it need not be a tenant)
        #[arg(long, value_name = "NAME")]
        after: Option<String>,
        #[command(flatten)]
        args: TenantArgs,
    },
    /// Create a tenant: its schema, migrated
    Create {
        /// The tenant's name
        name: String,
        #[command(flatten)]
        args: TenantArgs,
    },
    /// Apply pending migrations to one tenant, or every tenant (a progress bar on a terminal):
    /// lint first (no tenant touched if a file fails it), then an optional canary, then the
    /// rest; a failing tenant does not stop the others, each failure is named at the end, and
    /// a run cut short is resumed by the next run of the same files
    #[command(after_help = "Examples:
  pgdbm tenants migrate --all                  every tenant, 2 at a time
  pgdbm tenants migrate --all --canary 5       the first 5 with files pending, then (if none
                                               failed) the others
  pgdbm tenants migrate --all --drift          then compare every tenant with the migrations
  pgdbm tenants migrate acme                   one tenant")]
    Migrate {
        /// The tenant (default: every tenant)
        name: Option<String>,
        /// Every tenant (the default without NAME)
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// How many tenants to migrate at once
        #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
        concurrency: u16,
        /// Migrate the first N tenants with files pending first; if any of them fails, stop
        /// there and touch no other tenant (exit 1)
        #[arg(long, value_name = "N", conflicts_with = "name", value_parser = clap::value_parser!(u32).range(1..))]
        canary: Option<u32>,
        /// Check every tenant again instead of resuming an unfinished run of the same files
        #[arg(long, conflicts_with = "name")]
        no_resume: bool,
        /// After a run with no failure, compare every tenant's schema with a shadow migrated
        /// from the same files, as `pgdbm migrate drift --tenants` does (exit 1 on drift)
        #[arg(long, conflicts_with = "name")]
        drift: bool,
        /// The shadow database for --drift: an empty database (or one drift migrated before)
        /// [default: a scratch database on the throwaway server, dropped afterwards]
        #[arg(long, value_name = "URL", requires = "drift")]
        shadow_url: Option<String>,
        #[command(flatten)]
        args: TenantArgs,
    },
    /// Drop a tenant's schema and its registry row
    Drop {
        /// The tenant's name
        name: String,
        /// Really drop it
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        args: TenantArgs,
    },
}

/// Which tenant migrations.
#[derive(Clone, Debug, Args)]
pub struct TenantArgs {
    /// The module of pgdbm.toml whose migrations the tenants get (default: its top-level module)
    #[arg(long, value_name = "NAME")]
    pub module: Option<String>,
    /// The migrations directory (instead of pgdbm.toml's)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

const INSPECT_EXAMPLES: &str = "Examples:
  pgdbm inspect explain 'SELECT * FROM {{tables.users}} WHERE id = $1::int' 42
  pgdbm inspect explain --analyze 'UPDATE {{tables.users}} SET name = $2 WHERE id = $1::int' 7 Bob
  pgdbm inspect blocking                       who waits for whose lock
  pgdbm inspect long-running --threshold 5m    statements running for more than 5 minutes
  pgdbm inspect table-sizes --module billing --json
  pgdbm inspect health                         exit 3 when the database needs attention";

/// `pgdbm inspect …`: what the database is doing, for the current database of the connection
/// settings.
#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// Show the plan PostgreSQL picks for one statement (EXPLAIN); with --analyze the statement
    /// runs, in a transaction that is always rolled back
    Explain {
        /// One SELECT, INSERT, UPDATE, DELETE, MERGE, VALUES, WITH or TABLE statement;
        /// {{tables.x}} renders for the module's schema
        sql: String,
        /// Values for $1, $2, …: sent as text, so cast in the SQL where another type is meant
        /// (`WHERE id = $1::int`)
        #[arg(value_name = "PARAM", allow_negative_numbers = true)]
        params: Vec<String>,
        /// Run the statement and show actual times and rows (then roll it back)
        #[arg(long)]
        analyze: bool,
        /// Show buffer (block) counts; meaningful with --analyze
        #[arg(long)]
        buffers: bool,
        /// Show output columns and schema-qualified names
        #[arg(long)]
        verbose: bool,
        #[command(flatten)]
        target: InspectTarget,
    },
    /// Statements waiting for a lock another session holds, and the session holding it
    Blocking,
    /// Statements running (or transactions open) for longer than a threshold, longest first
    LongRunning {
        /// How long counts as long: 500ms, 30s, 5m, 1h
        #[arg(long, default_value = "60s", value_parser = crate::inspect::parse_duration, value_name = "DURATION")]
        threshold: Duration,
    },
    /// The tables of the module's schema with their sizes, largest first
    TableSizes {
        #[command(flatten)]
        target: InspectTarget,
    },
    /// A diagnostic report: server, lock waits, long-running queries, replication lag
    /// (exit 3 when degraded)
    Health,
}

/// Which schema `inspect explain` and `inspect table-sizes` use.
#[derive(Clone, Debug, Args)]
pub struct InspectTarget {
    /// The module of pgdbm.toml whose schema to use (default: its top-level module;
    /// table-sizes: every module if it has none)
    #[arg(long, value_name = "NAME")]
    pub module: Option<String>,
    /// The schema (instead of the module's; default DB_SCHEMA, else public)
    #[arg(long, value_name = "NAME")]
    pub schema: Option<String>,
}

/// `pgdbm test-server …`: the server in $PGDBM_TEST_SERVER_DIR, else in the cargo target
/// directory's `pgdbm-test-server/` (where the tests look for it).
#[derive(Debug, Subcommand)]
pub enum TestServerCommand {
    /// Start the throwaway server (or find it running) and print its URL; it lives in
    /// $PGDBM_TEST_SERVER_DIR, else in target/pgdbm-test-server
    Start,
    /// Stop it (nothing to do if it is not running)
    Stop,
    /// Whether it runs, where, and on which port (--json: running, port, dir, url)
    Status,
    /// Print its URL (exit 1 if it is not running)
    Url,
}

/// `pgdbm test …`.
#[derive(Debug, Subcommand)]
pub enum TestCommand {
    /// Drop test databases (pgdbm_test_*) left behind by killed test runs, on the server the tests
    /// use (PGDBM_TEST_DATABASE_URL, DATABASE_URL, localhost:5432, else the throwaway server)
    Cleanup {
        /// Every pgdbm_test_* database, not only stale ones (no test may be running)
        #[arg(long)]
        all: bool,
    },
}

/// `pgdbm prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Check .sqlx/ instead of writing it (exit 1 if it is out of date)
    #[arg(long, conflicts_with = "check_compat")]
    pub check: bool,
    /// Describe every query of a previous release's .sqlx/ on a scratch database migrated to the
    /// current migrations, and exit 1 if any no longer prepares or returns other columns, types
    /// or nullability (naming the migration file that broke it). The previous release is a
    /// directory (its .sqlx/ or its checkout) or a git ref of this repository (tag, branch,
    /// commit). Needs no `cargo sqlx`
    #[arg(long, value_name = "DIR|GIT-REF")]
    pub check_compat: Option<String>,
    /// With --check-compat, the other direction: this release's .sqlx/ queries against the
    /// previous release's schema (its migrations, from the git ref or checkout), for code
    /// deployed before its migrations
    #[arg(long, requires = "check_compat")]
    pub new_against_old: bool,
}

impl Command {
    /// What the command does to the database it connects to; `None` when it connects to none
    /// of the user's (it writes a file, manages the throwaway server, or makes a scratch
    /// database of its own).
    pub fn access(&self) -> Option<crate::context::Access> {
        use crate::context::Access::{Read, Write};
        Some(match self {
            Command::Migrate(m) => match &m.action {
                MigrateAction::Create { .. } | MigrateAction::Lint => return None,
                MigrateAction::Apply { dry_run: false } => Write("migrate apply"),
                MigrateAction::MarkUnapplied { .. } => Write("migrate mark-unapplied"),
                MigrateAction::Repair { dry_run: false, .. } => Write("migrate repair"),
                MigrateAction::Baseline { dry_run: false, .. } => Write("migrate baseline"),
                MigrateAction::Revert { dry_run: false, .. } => Write("migrate revert"),
                _ => Read,
            },
            Command::Db { command } => Write(match command {
                DbCommand::Create => "db create",
                DbCommand::Drop { .. } => "db drop",
                DbCommand::Reset { .. } => "db reset",
            }),
            Command::Tenants { command } => match command {
                TenantsCommand::List { .. } => Read,
                TenantsCommand::Create { .. } => Write("tenants create"),
                TenantsCommand::Migrate { .. } => Write("tenants migrate"),
                TenantsCommand::Drop { .. } => Write("tenants drop"),
            },
            Command::Inspect { .. } => Read,
            Command::TestServer { .. }
            | Command::Test { .. }
            | Command::Prepare(_)
            | Command::Completions { .. } => return None,
        })
    }
}
