//! Drift: what was changed in a live schema by hand, outside the migrations.
//!
//! A history table says which files ran, not what the schema looks like now: an index
//! dropped during an incident, a column added from a console or a default changed on one
//! tenant stay invisible until a later migration or query trips on them. Comparing the live
//! catalog with a *shadow*, a scratch database or schema migrated from the same files, finds
//! them. The catalogs are read with the server's own deparsers (so the files' spelling never
//! shows as drift), a batch of schemas per statement (so a fleet of tenants costs a few
//! statements, not one per object), and with each schema's own name taken out of the
//! definitions (so `tenant_a` and the shadow's schema compare equal).
//!
//! Here: the types, [`Database::schema_snapshot`] and [`Migrator::drift`]; `catalog` reads
//! catalogs, `compare` compares snapshots. `Tenants::drift` is beside the tenants.

mod catalog;
mod compare;

pub(crate) use catalog::read as read_snapshots;
pub use compare::compare_schemas;

use std::collections::BTreeMap;
use std::fmt;

use crate::ident::quote_identifier;
use crate::lint::LintPolicy;
use crate::runtime::database::Database;
use crate::runtime::error::{Error, Result};
use crate::runtime::migrator::{FileState, Migrator};

/// The history table [`Database::schema_snapshot`] leaves out (the migrator's default).
const HISTORY_TABLE: &str = "schema_migrations";

/// What kind of object a [`SchemaObject`] or [`Difference`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ObjectKind {
    /// The schema itself (a tenant's schema that is gone).
    Schema,
    /// An enum, domain, range or composite type.
    Type,
    /// A sequence (identity columns' sequences are part of their column).
    Sequence,
    /// A table (also partitioned, unlogged or foreign).
    Table,
    /// A table's column: type, collation, `NOT NULL`, default, identity or generation.
    Column,
    /// A primary key, unique, foreign key, check or exclusion constraint.
    Constraint,
    /// An index that no constraint owns.
    Index,
    /// A view.
    View,
    /// A materialized view.
    MaterializedView,
    /// A function (named with its argument types).
    Function,
    /// A procedure.
    Procedure,
    /// An aggregate.
    Aggregate,
    /// A trigger.
    Trigger,
}

impl ObjectKind {
    /// The kind as messages name it: `column`, `materialized view`, …
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Schema => "schema",
            ObjectKind::Type => "type",
            ObjectKind::Sequence => "sequence",
            ObjectKind::Table => "table",
            ObjectKind::Column => "column",
            ObjectKind::Constraint => "constraint",
            ObjectKind::Index => "index",
            ObjectKind::View => "view",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Function => "function",
            ObjectKind::Procedure => "procedure",
            ObjectKind::Aggregate => "aggregate",
            ObjectKind::Trigger => "trigger",
        }
    }

    fn from_catalog(s: &str) -> Option<ObjectKind> {
        [
            ObjectKind::Schema,
            ObjectKind::Type,
            ObjectKind::Sequence,
            ObjectKind::Table,
            ObjectKind::Column,
            ObjectKind::Constraint,
            ObjectKind::Index,
            ObjectKind::View,
            ObjectKind::MaterializedView,
            ObjectKind::Function,
            ObjectKind::Procedure,
            ObjectKind::Aggregate,
            ObjectKind::Trigger,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object of a [`SchemaSnapshot`], its schema's name taken out of its definition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SchemaObject {
    /// What it is.
    pub kind: ObjectKind,
    /// Its name: a column's own name (its table is [`table`](Self::table)), a function's with
    /// its argument types (`touch(integer)`).
    pub name: String,
    /// The table it belongs to (columns, indexes, constraints, triggers, owned sequences).
    pub table: Option<String>,
    /// How the server prints it: `varchar(255) NOT NULL DEFAULT 'x'::character varying` for a
    /// column, `pg_get_indexdef` for an index, `pg_get_functiondef` for a function, …
    pub definition: String,
}

/// The objects of one schema as the catalog describes them: tables, columns (type,
/// nullability, default), indexes, constraints, sequences, views, functions, triggers and
/// types. The migrations' history table is left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaSnapshot {
    schema: String,
    objects: BTreeMap<(ObjectKind, String, Option<String>), SchemaObject>,
}

impl SchemaSnapshot {
    fn empty(schema: &str) -> SchemaSnapshot {
        SchemaSnapshot {
            schema: schema.to_string(),
            objects: BTreeMap::new(),
        }
    }

    fn insert(&mut self, object: SchemaObject) {
        let key = (object.kind, object.name.clone(), key_table(&object));
        self.objects.insert(key, object);
    }

    /// The schema read.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Every object, by kind then name.
    pub fn objects(&self) -> impl Iterator<Item = &SchemaObject> {
        self.objects.values()
    }

    /// The object of `kind` named `name`; for a column, constraint or trigger `name` is
    /// `table.name` (their names are unique per table only).
    pub fn get(&self, kind: ObjectKind, name: &str) -> Option<&SchemaObject> {
        let (name, table) = match kind {
            ObjectKind::Column | ObjectKind::Constraint | ObjectKind::Trigger => {
                match name.split_once('.') {
                    Some((t, n)) => (n, Some(t.to_string())),
                    None => (name, None),
                }
            }
            _ => (name, None),
        };
        self.objects.get(&(kind, name.to_string(), table))
    }

    fn find(&self, like: &SchemaObject) -> Option<&SchemaObject> {
        self.objects
            .get(&(like.kind, like.name.clone(), key_table(like)))
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// `true` when the schema holds nothing (or does not exist).
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// Columns, constraints and triggers are named per table; everything else per schema.
fn key_table(o: &SchemaObject) -> Option<String> {
    match o.kind {
        ObjectKind::Column | ObjectKind::Constraint | ObjectKind::Trigger => o.table.clone(),
        _ => None,
    }
}

/// How one object differs: missing from the live schema, there but not made by the
/// migrations, or made differently.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Drift {
    /// The migrations make it; the live schema does not have it (dropped by hand?).
    Missing,
    /// The live schema has it; the migrations do not make it (added by hand?).
    Unexpected,
    /// Both have it, defined differently.
    Changed {
        /// As the migrations make it.
        expected: String,
        /// As the live schema has it.
        actual: String,
    },
}

/// One difference between the migrations and a live schema. Its `Display` is one line:
/// `column users.nickname: not in the migrations (added by hand?)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Difference {
    /// The object's kind.
    pub kind: ObjectKind,
    /// Its name (a column's own name; see [`display_name`](Self::display_name)).
    pub name: String,
    /// The table it belongs to, for columns, indexes, constraints, triggers, owned sequences.
    pub table: Option<String>,
    /// Missing, unexpected, or changed.
    #[serde(flatten)]
    pub drift: Drift,
}

/// What [`Migrator::drift`] or [`Tenants::drift`](crate::Tenants::drift) found in one schema.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DriftReport {
    /// The live schema compared (`public` for a handle without one).
    pub schema: String,
    /// The migrations' module.
    pub module: String,
    /// The tenant, for a tenant's schema.
    pub tenant: Option<String>,
    /// What differs; empty when the schema is what the migrations make.
    pub differences: Vec<Difference>,
}

impl DriftReport {
    /// `true` when nothing differs.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

impl Database {
    /// The objects of this handle's schema (`public` without one) as the catalog describes
    /// them, for [`compare_schemas`]; the history table `schema_migrations` is left out. One statement.
    ///
    /// ```no_run
    /// # async fn demo(live: pgdbm_core::Database, shadow: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// let differences = pgdbm_core::compare_schemas(&shadow.schema_snapshot().await?, &live.schema_snapshot().await?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The pool's and query errors of [`fetch_all`](Self::fetch_all).
    pub async fn schema_snapshot(&self) -> Result<SchemaSnapshot> {
        snapshot(self, HISTORY_TABLE).await
    }
}

/// The snapshot of `db`'s schema, leaving out the history table `history`.
async fn snapshot(db: &Database, history: &str) -> Result<SchemaSnapshot> {
    let schema = schema_of(db);
    let mut all = catalog::read(db, std::slice::from_ref(&schema), history).await?;
    Ok(all
        .remove(&schema)
        .unwrap_or_else(|| SchemaSnapshot::empty(&schema)))
}

fn schema_of(db: &Database) -> String {
    db.schema().unwrap_or("public").to_string()
}

impl Migrator {
    /// Compares this migrator's live schema with what its files make: migrates `shadow` (a
    /// handle on a scratch database, or a scratch schema) with the same files and settings,
    /// reads both catalogs and lists every difference: objects dropped, added or changed by
    /// hand. A service can call it at startup and report (or refuse to start on) drift:
    ///
    /// ```no_run
    /// # async fn demo(db: pgdbm_core::Database, scratch: pgdbm_core::Database) -> pgdbm_core::Result<()> {
    /// use pgdbm_core::Migrator;
    /// let report = Migrator::new(&db, "./migrations", "myservice").drift(&scratch).await?;
    /// for d in &report.differences {
    ///     tracing::warn!(schema = %report.schema, "schema drift: {d}");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// The shadow must be empty, or migrated before by these files (then only what is pending
    /// runs); it keeps the migrated objects afterwards, so a scratch database can serve the
    /// next check. The live schema is only read: its pending files show as missing objects,
    /// so apply them first. Names of the schemas are taken out of the definitions, so the
    /// shadow's schema may differ from the live one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] (nothing was changed) when `shadow` is the live schema itself,
    /// holds objects no migration recorded, or was migrated with other versions of the files;
    /// the errors of [`apply_pending`](Self::apply_pending) on the shadow (a file that fails
    /// there fails here, naming it); and the pool's and query errors reading the catalogs.
    pub async fn drift(&self, shadow: &Database) -> Result<DriftReport> {
        let live = self.database();
        if same_place(live, shadow).await? {
            return Err(refused(format!(
                "the shadow is the live schema `{}` itself: give drift a scratch database (or a schema of its own) to migrate",
                schema_of(live)
            )));
        }
        let expected = migrate_shadow(&self.on(shadow)).await?;
        let actual = snapshot(live, self.history_table()).await?;
        Ok(DriftReport {
            schema: schema_of(live),
            module: self.module().to_string(),
            tenant: None,
            differences: compare_schemas(&expected, &actual),
        })
    }
}

/// Migrates the shadow `m` applies to, after checking it is empty or was migrated by these
/// files, and returns its snapshot. Without lint: the files were linted (or allowed) when they
/// reached the live database, and a scratch database is never a table in use.
pub(crate) async fn migrate_shadow(m: &Migrator) -> Result<SchemaSnapshot> {
    let m = &m.clone().lint(LintPolicy::Off);
    let shadow = m.database();
    let before = snapshot(shadow, m.history_table()).await?;
    if !before.is_empty() && history_rows(m).await? == 0 {
        // The schema's own objects say enough: a table's columns would only repeat it.
        let top: Vec<&SchemaObject> = before.objects().filter(|o| o.table.is_none()).collect();
        let some: Vec<String> = top
            .iter()
            .take(3)
            .map(|o| format!("{} {}", o.kind, o.name))
            .collect();
        return Err(refused(format!(
            "the shadow schema `{}` of database `{}` already holds objects that no migration recorded ({}{}): drift migrates the shadow from the files, so give it an empty database or schema (a scratch database)",
            schema_of(shadow),
            shadow.config().get_database(),
            some.join(", "),
            if top.len() > 3 { ", …" } else { "" }
        )));
    }
    let other: Vec<String> = m
        .status()
        .await?
        .into_iter()
        .filter(|f| {
            matches!(
                f.state,
                FileState::Modified { .. } | FileState::Missing { .. }
            )
        })
        .map(|f| f.filename)
        .collect();
    if !other.is_empty() {
        return Err(refused(format!(
            "the shadow schema `{}` of database `{}` was migrated with other versions of these files ({} modified or gone): give drift an empty database or schema",
            schema_of(shadow),
            shadow.config().get_database(),
            other.join(", ")
        )));
    }
    m.apply_pending().await?;
    snapshot(shadow, m.history_table()).await
}

/// How many rows the shadow's history table holds (0 when it has none).
async fn history_rows(m: &Migrator) -> Result<i64> {
    let db = m.database();
    let table = format!(
        "{}.{}",
        quote_identifier(&schema_of(db)),
        quote_identifier(m.history_table())
    );
    let exists: Option<Option<String>> = db
        .fetch_value("SELECT to_regclass($1)::text", (table.clone(),))
        .await?;
    if exists.flatten().is_none() {
        return Ok(0);
    }
    let n: Option<i64> = db
        .fetch_value(&format!("SELECT count(*) FROM {table}"), ())
        .await?;
    Ok(n.unwrap_or(0))
}

/// Whether `a` and `b` are the same schema of the same database on the same server.
pub(crate) async fn same_place(a: &Database, b: &Database) -> Result<bool> {
    if schema_of(a) != schema_of(b) {
        return Ok(false);
    }
    const WHERE: &str = "SELECT current_database()::text, coalesce(inet_server_addr()::text, ''), coalesce(inet_server_port(), 0)";
    let x: (String, String, i32) = a.fetch_one(WHERE, ()).await?;
    let y: (String, String, i32) = b.fetch_one(WHERE, ()).await?;
    // Over a Unix socket the server has no address: the settings must say the same place.
    Ok(x == y && (!x.1.is_empty() || a.config().target() == b.config().target()))
}

pub(crate) fn refused(message: String) -> Error {
    Error::InvalidInput {
        operation: "drift",
        message,
    }
}
