//! Identifier validation shared by templating, config, migrations and test support.
//!
//! pgdbm interpolates schema and table names into SQL text, so every such name must be an
//! unquoted-safe PostgreSQL identifier: `^[A-Za-z_][A-Za-z0-9_]{0,62}$`.

use std::fmt;

/// The longest identifier PostgreSQL keeps without truncation (`NAMEDATALEN - 1`).
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// What kind of name an identifier is, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentifierKind {
    /// A schema name.
    Schema,
    /// A table (or other relation) name.
    Table,
    /// A database name.
    Database,
    /// A column name.
    Column,
    /// The migration history table name.
    MigrationsTable,
    /// A LISTEN/NOTIFY channel name.
    Channel,
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentifierKind::Schema => "schema name",
            IdentifierKind::Table => "table name",
            IdentifierKind::Database => "database name",
            IdentifierKind::Column => "column name",
            IdentifierKind::MigrationsTable => "migrations table name",
            IdentifierKind::Channel => "channel name",
        })
    }
}

/// A name that is not a valid identifier.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {kind} `{name}`: {reason}; names must match ^[A-Za-z_][A-Za-z0-9_]{{0,62}}$ (a letter or underscore, then up to 62 letters, digits or underscores)"
)]
#[non_exhaustive]
pub struct InvalidIdentifier {
    /// What the name was meant to be.
    pub kind: IdentifierKind,
    /// The rejected name (never contains secrets: identifiers only).
    pub name: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// Checks that `name` is a valid identifier of the given kind.
///
/// ```
/// use pgdbm_core::ident::{validate_identifier, IdentifierKind};
/// assert!(validate_identifier("users", IdentifierKind::Table).is_ok());
/// let err = validate_identifier("9users", IdentifierKind::Table).unwrap_err();
/// assert!(err.to_string().contains("invalid table name `9users`"));
/// ```
///
/// # Errors
///
/// [`InvalidIdentifier`] (naming `kind` and `name`) when `name` is empty, longer than
/// [`MAX_IDENTIFIER_LEN`] bytes, does not start with an ASCII letter or underscore, or holds
/// anything but ASCII letters, digits and underscores.
pub fn validate_identifier(name: &str, kind: IdentifierKind) -> Result<(), InvalidIdentifier> {
    let reason = identifier_problem(name);
    match reason {
        None => Ok(()),
        Some(reason) => Err(InvalidIdentifier {
            kind,
            name: name.to_owned(),
            reason,
        }),
    }
}

/// Returns `true` when `name` is a valid identifier.
pub fn is_valid_identifier(name: &str) -> bool {
    identifier_problem(name).is_none()
}

fn identifier_problem(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Some("it is empty");
    };
    if bytes.len() > MAX_IDENTIFIER_LEN {
        return Some("it is longer than 63 characters");
    }
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return Some("it must start with a letter or underscore");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return Some("it may only contain ASCII letters, digits and underscores");
    }
    None
}

/// Quotes an identifier for SQL (`"name"`), doubling embedded quotes.
///
/// Validated identifiers never contain quotes; this exists so that every interpolation site can
/// quote uniformly.
pub fn quote_identifier(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for name in [
            "a",
            "_",
            "users",
            "User_2",
            "CamelCaseSchema",
            &"a".repeat(63),
        ] {
            assert!(is_valid_identifier(name), "{name}");
        }
    }

    #[test]
    fn rejects_invalid_names_with_reason() {
        let cases = [
            ("", "it is empty"),
            ("9users", "it must start with a letter or underscore"),
            (
                "bad-name",
                "it may only contain ASCII letters, digits and underscores",
            ),
            (
                "bad\"",
                "it may only contain ASCII letters, digits and underscores",
            ),
            ("été", "it must start with a letter or underscore"),
        ];
        for (name, reason) in cases {
            let err = validate_identifier(name, IdentifierKind::Schema).unwrap_err();
            assert_eq!(err.reason, reason, "{name}");
            assert_eq!(err.kind, IdentifierKind::Schema);
        }
        let long = "a".repeat(64);
        assert_eq!(
            validate_identifier(&long, IdentifierKind::Table)
                .unwrap_err()
                .reason,
            "it is longer than 63 characters"
        );
    }

    #[test]
    fn quotes() {
        assert_eq!(quote_identifier("My"), "\"My\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
