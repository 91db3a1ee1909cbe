//! Lint before apply: the pending files of a run are linted together ([`crate::lint::lint_run`])
//! before anything runs, and under [`LintPolicy::Deny`] (the default) a finding no pragma allows
//! stops the run with nothing applied. Files already applied are never linted: they ran, and
//! what they did cannot be undone by refusing them now.

use crate::lint::{LintConfig, LintOptions, LintPolicy, LintReport, lint_run};
use crate::migrations::{Migration, MigrationSet};
use crate::runtime::error::{Aftermath, Error, MigrationError, Result};

use super::Migrator;
use super::PrimitiveDateTime;

/// The migrator's lint settings.
#[derive(Clone, Debug, Default)]
pub(super) struct LintSetup {
    policy: LintPolicy,
    options: LintOptions,
}

impl Migrator {
    /// What [`apply_pending`](Self::apply_pending) does with lint findings in the files it is
    /// about to apply (default [`LintPolicy::Deny`]: refuse, applying nothing, while a finding is
    /// not allowed by a `-- pgdbm:lint-allow RULE reason` pragma; `Warn`: log each finding at
    /// WARN and apply; `Off`: do not lint). The CLI takes it from pgdbm.toml's `[lint]`.
    #[must_use = "a migrator does nothing until a method such as `apply_pending` runs"]
    pub fn lint(mut self, policy: LintPolicy) -> Self {
        self.lint.policy = policy;
        self
    }

    /// Which rules run (default [`LintOptions::new`]).
    #[must_use = "a migrator does nothing until a method such as `apply_pending` runs"]
    pub fn lint_options(mut self, options: LintOptions) -> Self {
        self.lint.options = options;
        self
    }

    /// The policy and rules of pgdbm.toml's `[lint]` ([`Project::lint`](crate::project::Project::lint)).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (field `lint`) naming a rule squawk does not know.
    pub fn lint_config(self, config: &LintConfig) -> Result<Self> {
        let options =
            LintOptions::from_config(config).map_err(|e| Error::config("lint", e.to_string()))?;
        Ok(self.lint(config.policy).lint_options(options))
    }

    /// Lints the files that are pending on this database, as [`apply_pending`](Self::apply_pending)
    /// would before running them (a table created by an earlier pending file is new), whatever
    /// the policy. Reads the history; changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] when the files cannot be read, [`Error::Connect`] and
    /// [`Error::Query`] when the history cannot be read, and a bad table or module name.
    pub async fn lint_pending(&self) -> Result<LintReport> {
        self.check_names()?;
        let set = self.files()?;
        let mut conn = self.dedicated().await?;
        let applied = self.read_applied(&mut conn).await;
        let _ = sqlx::Connection::close(conn).await;
        Ok(self.lint_report(&set, &applied?))
    }

    fn lint_report(
        &self,
        set: &MigrationSet,
        applied: &[(String, String, PrimitiveDateTime)],
    ) -> LintReport {
        let pending: Vec<&Migration> = set
            .iter()
            .filter(|m| !applied.iter().any(|a| a.0 == m.filename))
            .collect();
        lint_run(pending, self.db.schema(), &self.lint.options)
    }

    /// The check `apply_pending` makes before anything runs, by the policy.
    pub(super) fn check_lint(
        &self,
        set: &MigrationSet,
        applied: &[(String, String, PrimitiveDateTime)],
    ) -> Result<()> {
        if self.lint.policy == LintPolicy::Off {
            return Ok(());
        }
        let report = self.lint_report(set, applied);
        if self.lint.policy == LintPolicy::Warn || report.is_clean() {
            for f in report.findings.iter().filter(|f| f.allowed.is_none()) {
                tracing::warn!(
                    file = %f.file,
                    line = f.line,
                    column = f.column,
                    rule = %f.rule,
                    module = %self.module,
                    rewrite = %f.rewrite,
                    "pgdbm: migration lint: {}",
                    f.message
                );
            }
            return Ok(());
        }
        let first = report.denied().next().expect("not clean");
        Err(Error::Migration(Box::new(MigrationError {
            file: Some(first.file.clone()),
            position: Some((first.line, first.column)),
            statement: None,
            message: format!(
                "lint refused the pending files, nothing was applied. {report}, or set [lint] policy = \"warn\" in pgdbm.toml (Migrator::lint) to apply anyway"
            ),
            aftermath: Aftermath::Unchanged,
            source: Some(Box::new(report)),
        })))
    }
}

impl MigrationError {
    /// The lint findings, when lint refused the run ([`Migrator::lint`]): nothing was applied.
    pub fn lint(&self) -> Option<&LintReport> {
        self.source.as_deref()?.downcast_ref::<LintReport>()
    }
}
