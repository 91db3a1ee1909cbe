//! A finding placed in the file as written: its line and column, and the byte offset pragmas
//! match on. Shared by the linting of a file and the pragmas applied to its findings.

use super::{Finding, Severity};
use crate::migrations::{Migration, line_col};

/// A finding with its byte offset in the file as written (pragmas match on it).
pub(super) struct Located {
    pub(super) offset: usize,
    pub(super) finding: Finding,
}

/// A finding of `rule` at byte `offset` of `content` (the file as written), an error until a
/// pragma or the policy says otherwise.
pub(super) fn finding(
    m: &Migration,
    content: &str,
    offset: usize,
    rule: &str,
    message: String,
    help: Option<String>,
    rewrite: String,
) -> Finding {
    let (line, column) = line_col(content, offset);
    Finding {
        file: m.filename.clone(),
        line,
        column,
        rule: rule.to_string(),
        message,
        help,
        rewrite,
        severity: Severity::Error,
        allowed: None,
    }
}

/// A finding that pgdbm itself makes (about a pragma, say), located at `offset`.
pub(super) fn at_offset(
    m: &Migration,
    offset: usize,
    rule: &str,
    message: String,
    severity: Severity,
    rewrite: String,
) -> Located {
    let mut f = finding(m, &m.content, offset, rule, message, None, rewrite);
    f.severity = severity;
    Located { offset, finding: f }
}
