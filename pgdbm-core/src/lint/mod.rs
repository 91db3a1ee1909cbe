//! Migration lint: the statements that take a service down (an index built without
//! `CONCURRENTLY` on a table in use, a `NOT NULL` column without a default, a type change that
//! rewrites the table, a constraint validated under an exclusive lock, a dropped column that old
//! replicas still read, …), found before a file runs.
//!
//! The rules are [squawk](https://squawkhq.com)'s (`squawk-linter`): pgdbm does not write its own.
//! What pgdbm adds is what squawk cannot know on its own:
//!
//! - **the file as it runs**: placeholders (`{{tables.x}}`, `{{schema}}`) are rendered first, and
//!   each finding's line and column are mapped back to the file the author wrote;
//! - **how pgdbm runs it**: every file runs in a transaction of its own unless it is marked
//!   `-- pgdbm:no-transaction`, so squawk is told which (`assume_in_transaction`);
//! - **the run**: a table created by an earlier file of the same run (or an earlier statement of
//!   the same file) is new and empty, so a finding about it is dropped: a fresh database migrates
//!   with no findings ([`lint_run`]). Linting files one by one ([`lint_standalone`], what `pgdbm
//!   migrate lint` does) treats every earlier file as deployed;
//! - **a reason for each exception**: `-- pgdbm:lint-allow RULE reason` allows the nearest
//!   following finding of `RULE`, and only one; a pragma without a reason is a finding itself,
//!   and one that allows nothing is a warning (squawk's own `-- squawk-ignore` comments, which
//!   give no reason, are findings too);
//! - **the safe rewrite**: each finding says what to write instead, in pgdbm's terms (a
//!   `CONCURRENTLY` statement goes in a `-- pgdbm:no-transaction` file, `VALIDATE` in a later
//!   file).
//!
//! SQL that squawk cannot parse is a finding (`parse-error`), never a panic.
//!
//! Rules left out by default ([`LintOptions::DEFAULT_EXCLUDED`]): `require-lock-timeout` and
//! `require-statement-timeout`, because pgdbm sets a short `lock_timeout` on every migration
//! statement itself and retries, and a long statement that holds no blocking lock (an index
//! built concurrently) is fine; `transaction-nesting`, because pgdbm (Python)'s
//! `create_migration` writes its own `BEGIN`/`COMMIT` into every file and both runners apply
//! such files correctly; and squawk's style rules (`prefer-bigint-over-int`,
//! `prefer-identity`, `prefer-text-field`, `prefer-timestamp-tz`, …), which judge a column type
//! rather than whether the statement is safe to run on a live table. `include` turns any of them
//! back on.
//!
//! Pure: no database. Built with the `lint` feature (on with `runtime`); `pgdbm-macros` does not
//! build it.

mod file;
mod located;
mod pragma;
mod rewrite;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;

pub use crate::project::{LintConfig, LintPolicy, UnknownLintPolicy};

use crate::migrations::Migration;

/// pgdbm's own rule for SQL that the parser cannot read.
pub const PARSE_ERROR: &str = "parse-error";
/// pgdbm's own rule for a bad `{{…}}` placeholder.
pub const TEMPLATE_ERROR: &str = "template-error";
/// pgdbm's own rule for a `-- pgdbm:lint-allow` pragma that is malformed or has no reason.
pub const INVALID_PRAGMA: &str = "invalid-lint-allow";
/// pgdbm's own rule (a warning) for a pragma that allowed nothing.
pub const UNUSED_PRAGMA: &str = "unused-lint-allow";

/// How serious a [`Finding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Denies applying (under [`LintPolicy::Deny`]) unless a pragma allows it.
    Error,
    /// Reported, never denies (an unused pragma).
    Warning,
}

/// One problem in one migration file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The file name (e.g. `003_index_email.sql`).
    pub file: String,
    /// 1-based line in the file as written (before placeholders were rendered).
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The rule: squawk's kebab-case name (`require-concurrent-index-creation`), or one of
    /// pgdbm's own ([`PARSE_ERROR`], [`TEMPLATE_ERROR`], [`INVALID_PRAGMA`], [`UNUSED_PRAGMA`]).
    pub rule: String,
    /// What is wrong.
    pub message: String,
    /// squawk's own help, when it has one.
    pub help: Option<String>,
    /// What to write instead, in pgdbm's terms.
    pub rewrite: String,
    /// Error or warning.
    pub severity: Severity,
    /// The reason of the `-- pgdbm:lint-allow` pragma that allows it, if one does.
    pub allowed: Option<String>,
}

impl Finding {
    /// Whether it stops `apply` under [`LintPolicy::Deny`]: an error no pragma allows.
    pub fn is_denied(&self) -> bool {
        self.severity == Severity::Error && self.allowed.is_none()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match (&self.allowed, self.severity) {
            (Some(_), _) => "allowed",
            (None, Severity::Error) => "error",
            (None, Severity::Warning) => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {level} [{}] {}",
            self.file, self.line, self.column, self.rule, self.message
        )?;
        match &self.allowed {
            Some(reason) => write!(f, "\n  allowed: {reason}"),
            None => write!(f, "\n  safe rewrite: {}", self.rewrite),
        }
    }
}

/// What linting a set of files found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LintReport {
    /// Every finding (allowed ones and warnings too), by file, then position.
    pub findings: Vec<Finding>,
    /// How many files were linted.
    pub files_linted: usize,
}

impl LintReport {
    /// The findings that deny applying: errors no pragma allows.
    pub fn denied(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_denied())
    }

    /// Whether nothing denies applying (warnings and allowed findings may remain).
    pub fn is_clean(&self) -> bool {
        self.denied().next().is_none()
    }
}

impl fmt::Display for LintReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let denied: Vec<&Finding> = self.denied().collect();
        if denied.is_empty() {
            return write!(
                f,
                "{} file(s) linted: no unsafe statement",
                self.files_linted
            );
        }
        write!(
            f,
            "{} unsafe statement(s) in {} file(s) linted:",
            denied.len(),
            self.files_linted
        )?;
        for d in denied {
            write!(f, "\n{d}")?;
        }
        write!(
            f,
            "\nRewrite each as suggested, or, when it is safe here (say, the table is small), put `-- pgdbm:lint-allow RULE reason` above it"
        )
    }
}

impl std::error::Error for LintReport {}

/// A rule name that squawk does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a squawk rule{}; the rules are listed at https://squawkhq.com/docs/rules",
    .suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
#[non_exhaustive]
pub struct UnknownRule {
    /// The name as given.
    pub name: String,
    /// The nearest known name, if one is near.
    pub suggestion: Option<String>,
}

/// Which rules run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LintOptions {
    exclude: BTreeSet<String>,
    include: BTreeSet<String>,
}

impl Default for LintOptions {
    fn default() -> Self {
        LintOptions {
            exclude: Self::DEFAULT_EXCLUDED
                .iter()
                .map(|s| s.to_string())
                .collect(),
            include: BTreeSet::new(),
        }
    }
}

impl LintOptions {
    /// The rules pgdbm leaves out by default, and why (see the module documentation): pgdbm
    /// sets `lock_timeout` itself, pgdbm (Python)'s `create_migration` writes `BEGIN`/`COMMIT`
    /// into files that run correctly, and the style rules judge column types, not safety.
    pub const DEFAULT_EXCLUDED: &'static [&'static str] = &[
        "require-lock-timeout",
        "require-statement-timeout",
        "transaction-nesting",
        "prefer-bigint-over-int",
        "prefer-bigint-over-smallint",
        "prefer-identity",
        "prefer-text-field",
        "prefer-timestamp-tz",
        "ban-char-field",
    ];

    /// pgdbm's defaults: squawk's default rules less [`DEFAULT_EXCLUDED`](Self::DEFAULT_EXCLUDED).
    pub fn new() -> Self {
        Self::default()
    }

    /// The defaults with `[lint]`'s `exclude` and `include` applied.
    ///
    /// # Errors
    ///
    /// [`UnknownRule`] for a name squawk does not know.
    pub fn from_config(config: &LintConfig) -> Result<Self, UnknownRule> {
        let mut o = Self::default();
        for r in &config.exclude {
            o = o.exclude(r)?;
        }
        for r in &config.include {
            o = o.include(r)?;
        }
        Ok(o)
    }

    /// Leaves `rule` out.
    ///
    /// # Errors
    ///
    /// [`UnknownRule`] when squawk has no rule of that name.
    pub fn exclude(mut self, rule: &str) -> Result<Self, UnknownRule> {
        let name = canonical(rule)?;
        self.include.remove(&name);
        self.exclude.insert(name);
        Ok(self)
    }

    /// Checks `rule` although it is off by default (one of
    /// [`DEFAULT_EXCLUDED`](Self::DEFAULT_EXCLUDED), or one squawk makes opt-in).
    ///
    /// # Errors
    ///
    /// [`UnknownRule`] when squawk has no rule of that name.
    pub fn include(mut self, rule: &str) -> Result<Self, UnknownRule> {
        let name = canonical(rule)?;
        self.exclude.remove(&name);
        self.include.insert(name);
        Ok(self)
    }

    fn squawk_rules(&self) -> (Vec<squawk_linter::Rule>, Vec<squawk_linter::Rule>) {
        let parse = |set: &BTreeSet<String>| set.iter().filter_map(|r| r.parse().ok()).collect();
        (parse(&self.include), parse(&self.exclude))
    }
}

/// squawk's spelling of a rule name (it accepts two spellings of one rule).
fn canonical(rule: &str) -> Result<String, UnknownRule> {
    match rule.parse::<squawk_linter::Rule>() {
        Ok(r) => Ok(r.to_string()),
        Err(_) => Err(unknown_rule(rule)),
    }
}

pub(crate) fn unknown_rule(name: &str) -> UnknownRule {
    let suggestion = crate::project::rule_names()
        .into_iter()
        .chain([PARSE_ERROR.to_string()])
        .map(|k| (strsim::jaro_winkler(name, &k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k);
    UnknownRule {
        name: name.to_string(),
        suggestion,
    }
}

/// Lints each file on its own, as if every earlier file were deployed (what `pgdbm migrate
/// lint` does: without a database it cannot know which files are pending). Placeholders render
/// for `schema`.
pub fn lint_standalone<'a>(
    files: impl IntoIterator<Item = &'a Migration>,
    schema: Option<&str>,
    options: &LintOptions,
) -> LintReport {
    let mut report = LintReport::default();
    for m in files {
        let mut created = BTreeSet::new();
        report
            .findings
            .extend(file::lint_file(m, schema, options, &mut created));
        report.files_linted += 1;
    }
    report
}

/// Lints the files one run applies, in order: a table created by an earlier file of the run is
/// new, so findings about it are dropped (an index built on it, a column added, …). A fresh
/// database therefore migrates with no findings, while a file that alters a table an earlier,
/// already applied run created is linted in full.
pub fn lint_run<'a>(
    files: impl IntoIterator<Item = &'a Migration>,
    schema: Option<&str>,
    options: &LintOptions,
) -> LintReport {
    let mut report = LintReport::default();
    let mut created = BTreeSet::new();
    for m in files {
        report
            .findings
            .extend(file::lint_file(m, schema, options, &mut created));
        report.files_linted += 1;
    }
    report
}
