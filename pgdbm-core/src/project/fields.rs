//! Walking a TOML table: each key with its dotted name and span (for line numbers, and for file
//! order, since toml's tables are sorted by key), each value read as the type it must have.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Location, MigrationsDir, ProjectError};
use crate::ident::{IdentifierKind, validate_identifier};

/// One key of a table, where it is and its value.
pub(super) struct Field<'a, 'i> {
    pub(super) key: &'a str,
    pub(super) dotted: String,
    pub(super) span: Range<usize>,
    pub(super) value: &'a Spanned<DeValue<'i>>,
}

/// The entries of `t` in file order.
pub(super) fn fields<'a, 'i>(t: &'a DeTable<'i>, prefix: &str) -> Vec<Field<'a, 'i>> {
    let mut out: Vec<Field<'a, 'i>> = t
        .iter()
        .map(|(k, value)| {
            let key: &str = k.get_ref().as_ref();
            Field {
                key,
                dotted: if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                },
                span: k.span(),
                value,
            }
        })
        .collect();
    out.sort_by_key(|f| f.span.start);
    out
}

/// The file being read.
pub(super) struct Cx<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    /// Its directory, which relative paths are resolved against.
    pub(super) base: &'a Path,
}

impl Cx<'_> {
    pub(super) fn at(&self, span: &Range<usize>) -> Location {
        Location {
            path: self.path.to_path_buf(),
            line: self
                .text
                .get(..span.start)
                .map(|t| t.matches('\n').count() + 1),
        }
    }

    pub(super) fn unknown(
        &self,
        f: &Field<'_, '_>,
        section: &str,
        accepted: &'static [&'static str],
    ) -> ProjectError {
        // A near miss, else a key it extends (`schema_name`, Python's attribute, is `schema`).
        let suggestion = accepted
            .iter()
            .map(|a| (strsim::levenshtein(f.key, a), *a))
            .filter(|(d, a)| *d <= 2.max(a.len() / 3))
            .min()
            .map(|(_, a)| a)
            .or_else(|| {
                accepted
                    .iter()
                    .copied()
                    .find(|a| f.key.strip_prefix(a).is_some_and(|r| r.starts_with('_')))
            });
        ProjectError::UnknownKey {
            at: self.at(&f.span),
            section: section.to_string(),
            key: f.key.to_string(),
            accepted,
            suggestion,
        }
    }

    pub(super) fn invalid_at(
        &self,
        span: &Range<usize>,
        key: &str,
        problem: String,
    ) -> ProjectError {
        ProjectError::Invalid {
            at: self.at(span),
            key: key.to_string(),
            problem,
        }
    }

    pub(super) fn invalid(&self, f: &Field<'_, '_>, problem: String) -> ProjectError {
        self.invalid_at(&f.span, &f.dotted, problem)
    }

    pub(super) fn wrong(&self, f: &Field<'_, '_>, expected: &'static str) -> ProjectError {
        ProjectError::WrongType {
            at: self.at(&f.span),
            key: f.dotted.clone(),
            expected,
            found: match f.value.get_ref() {
                DeValue::String(_) => "a string",
                DeValue::Integer(_) => "an integer",
                DeValue::Float(_) => "a float",
                DeValue::Boolean(_) => "a boolean",
                DeValue::Datetime(_) => "a datetime",
                DeValue::Array(_) => "an array",
                DeValue::Table(_) => "a table",
            },
        }
    }

    pub(super) fn string(&self, f: &Field<'_, '_>) -> Result<String, ProjectError> {
        match f.value.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            _ => Err(self.wrong(f, "a string")),
        }
    }

    pub(super) fn integer(
        &self,
        f: &Field<'_, '_>,
        range: Range<i64>,
    ) -> Result<i64, ProjectError> {
        let DeValue::Integer(i) = f.value.get_ref() else {
            return Err(self.wrong(f, "an integer"));
        };
        i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                self.invalid(
                    f,
                    format!(
                        "{i} is out of range: it must be from {} to {}",
                        range.start,
                        range.end - 1
                    ),
                )
            })
    }

    pub(super) fn boolean(&self, f: &Field<'_, '_>) -> Result<bool, ProjectError> {
        f.value
            .get_ref()
            .as_bool()
            .ok_or_else(|| self.wrong(f, "true or false"))
    }

    pub(super) fn table<'a, 'i>(
        &self,
        f: &Field<'a, 'i>,
        what: &'static str,
    ) -> Result<&'a DeTable<'i>, ProjectError> {
        f.value
            .get_ref()
            .as_table()
            .ok_or_else(|| self.wrong(f, what))
    }

    /// An array of strings, each with its span.
    pub(super) fn strings(
        &self,
        f: &Field<'_, '_>,
    ) -> Result<Vec<(String, Range<usize>)>, ProjectError> {
        let err = || self.wrong(f, "an array of strings");
        let array = f.value.get_ref().as_array().ok_or_else(err)?;
        array
            .iter()
            .map(|v| match v.get_ref() {
                DeValue::String(s) => Ok((s.to_string(), v.span())),
                _ => Err(err()),
            })
            .collect()
    }

    /// A non-empty string (a module or environment name).
    pub(super) fn name(&self, f: &Field<'_, '_>) -> Result<String, ProjectError> {
        let s = self.string(f)?;
        if s.is_empty() {
            return Err(self.invalid(f, "the name is empty".into()));
        }
        Ok(s)
    }

    /// A schema: empty means none (bare table names).
    pub(super) fn schema(&self, f: &Field<'_, '_>) -> Result<Option<String>, ProjectError> {
        let s = self.string(f)?;
        if s.is_empty() {
            return Ok(None);
        }
        validate_identifier(&s, IdentifierKind::Schema)
            .map_err(|e| self.invalid(f, e.to_string()))?;
        Ok(Some(s))
    }

    pub(super) fn dir(&self, f: &Field<'_, '_>) -> Result<MigrationsDir, ProjectError> {
        let written = self.string(f)?;
        Ok(MigrationsDir {
            path: self.base.join(&written),
            written,
        })
    }
}
