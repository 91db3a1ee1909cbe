//! `[lint]` of pgdbm.toml: what `apply` does with migration lint findings, and which rules a
//! project turns off or on.
//!
//! ```toml
//! [lint]
//! policy = "deny"                          # "deny" (default), "warn" or "off"
//! exclude = ["ban-drop-column"]            # squawk rules this project does not want
//! include = ["prefer-bigint-over-int"]     # rules pgdbm leaves off by default, turned on
//! ```
//!
//! The types live here, in the pure layer, because the file reader needs them without the
//! linter (`pgdbm-macros` reads pgdbm.toml but never lints); [`crate::lint`] re-exports them.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use super::ProjectError;
use super::fields::{Cx, Field, fields};

const LINT: &[&str] = &["policy", "exclude", "include"];

/// What `Migrator::apply_pending` does with the lint findings of the files it is about to apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LintPolicy {
    /// Refuse to apply anything while a finding is not allowed by a
    /// `-- pgdbm:lint-allow RULE reason` pragma (the default).
    #[default]
    Deny,
    /// Log each finding as a warning, then apply.
    Warn,
    /// Do not lint.
    Off,
}

impl LintPolicy {
    /// Every policy, as written in pgdbm.toml.
    pub const NAMES: [&'static str; 3] = ["deny", "warn", "off"];

    /// The policy as written in pgdbm.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            LintPolicy::Deny => "deny",
            LintPolicy::Warn => "warn",
            LintPolicy::Off => "off",
        }
    }
}

impl fmt::Display for LintPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that is none of [`LintPolicy::NAMES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown lint policy `{0}`; the policies are: deny, warn, off")]
pub struct UnknownLintPolicy(pub String);

impl FromStr for LintPolicy {
    type Err = UnknownLintPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(LintPolicy::Deny),
            "warn" => Ok(LintPolicy::Warn),
            "off" => Ok(LintPolicy::Off),
            _ => Err(UnknownLintPolicy(s.to_string())),
        }
    }
}

/// `[lint]`: the policy and the rule names a project excludes or includes (squawk's kebab-case
/// names, checked against squawk's list when pgdbm-core is built with its `lint` feature).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LintConfig {
    /// `policy` (default [`LintPolicy::Deny`]).
    pub policy: LintPolicy,
    /// `exclude`: rules not checked.
    pub exclude: Vec<String>,
    /// `include`: rules checked although pgdbm (or squawk) leaves them off by default.
    pub include: Vec<String>,
}

impl Cx<'_> {
    pub(super) fn lint(&self, f: &Field<'_, '_>) -> Result<LintConfig, ProjectError> {
        let mut config = LintConfig::default();
        for k in fields(self.table(f, "a table")?, "lint") {
            match k.key {
                "policy" => {
                    let s = self.string(&k)?;
                    config.policy = s.parse().map_err(|e: UnknownLintPolicy| {
                        self.invalid(&k, format!("{e} (what `apply` does with a finding)"))
                    })?;
                }
                "exclude" => config.exclude = self.rules(&k)?,
                "include" => config.include = self.rules(&k)?,
                _ => return Err(self.unknown(&k, "[lint]", LINT)),
            }
        }
        Ok(config)
    }

    fn rules(&self, f: &Field<'_, '_>) -> Result<Vec<String>, ProjectError> {
        let mut out = Vec::new();
        for (name, span) in self.strings(f)? {
            self.check_rule(f, &name, &span)?;
            out.push(name);
        }
        Ok(out)
    }

    #[cfg(feature = "lint")]
    fn check_rule(
        &self,
        f: &Field<'_, '_>,
        name: &str,
        span: &Range<usize>,
    ) -> Result<(), ProjectError> {
        if name.parse::<squawk_linter::Rule>().is_ok() {
            return Ok(());
        }
        let known = rule_names();
        let near = known
            .iter()
            .map(|k| (strsim::jaro_winkler(name, k), k))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        Err(self.invalid_at(
            span,
            &f.dotted,
            format!(
                "`{name}` is not a squawk rule{near}; the rules are listed at https://squawkhq.com/docs/rules"
            ),
        ))
    }

    #[cfg(not(feature = "lint"))]
    fn check_rule(
        &self,
        _f: &Field<'_, '_>,
        _name: &str,
        _span: &Range<usize>,
    ) -> Result<(), ProjectError> {
        Ok(())
    }
}

/// squawk's rule names (the kebab-case names its `Display` writes and its parser reads).
#[cfg(feature = "lint")]
pub(crate) fn rule_names() -> Vec<String> {
    enum_iterator::all::<squawk_linter::Rule>()
        .map(|r| r.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::project::Project;

    fn parse(text: &str) -> Result<Project, ProjectError> {
        Project::parse(text, Path::new("/srv/pgdbm.toml"))
    }

    #[test]
    fn lint_table_is_read_and_defaults_to_deny() {
        assert_eq!(parse("").unwrap().lint, LintConfig::default());
        assert_eq!(LintConfig::default().policy, LintPolicy::Deny);
        let p = parse("[lint]\npolicy = \"warn\"\nexclude = [\"ban-drop-column\"]\ninclude = [\"prefer-identity\"]\n").unwrap();
        assert_eq!(p.lint.policy, LintPolicy::Warn);
        assert_eq!(p.lint.exclude, ["ban-drop-column"]);
        assert_eq!(p.lint.include, ["prefer-identity"]);
        assert_eq!(
            parse("[lint]\npolicy = \"off\"\n").unwrap().lint.policy,
            LintPolicy::Off
        );
    }

    #[test]
    fn bad_lint_values_are_errors_at_their_line() {
        let e = parse("\n[lint]\npolicy = \"strict\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3")
                && e.contains("unknown lint policy `strict`; the policies are: deny, warn, off"),
            "{e}"
        );
        let e = parse("[lint]\npolicy = 1\n").unwrap_err().to_string();
        assert!(e.contains("lint.policy"), "{e}");
        let e = parse("[lint]\nstrict = true\n").unwrap_err().to_string();
        assert!(e.contains("strict") && e.contains("policy"), "{e}");
        #[cfg(feature = "lint")]
        {
            let e = parse("[lint]\nexclude = [\"ban-drop-colum\"]\n")
                .unwrap_err()
                .to_string();
            assert!(e.contains("did you mean `ban-drop-column`"), "{e}");
        }
    }
}
