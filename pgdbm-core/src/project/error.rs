//! What can be wrong with a `pgdbm.toml`, said so that the reader knows what to change.

use std::fmt;
use std::path::PathBuf;

/// Where in a `pgdbm.toml` something is: the file and, when known, the line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// The line (1-based), when known.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.path.display())?;
        match self.line {
            Some(line) => write!(f, " line {line}"),
            None => Ok(()),
        }
    }
}

/// A `pgdbm.toml` that cannot be read or used. Never contains a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectError {
    /// The file cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("`{}` is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message, with the line and column.
        message: String,
    },
    /// A key no section of pgdbm.toml takes (pgdbm (Python) would silently ignore it).
    #[error(
        "{at}: unknown key `{key}` in {section}{}; {section} takes: {}",
        suggestion.map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(),
        accepted.join(", ")
    )]
    UnknownKey {
        /// Where.
        at: Location,
        /// The section, as shown: `[modules.billing]`, or `the top level`.
        section: String,
        /// The key as written.
        key: String,
        /// The keys that section takes.
        accepted: &'static [&'static str],
        /// The accepted key closest to it, if any is close.
        suggestion: Option<&'static str>,
    },
    /// A value of the wrong TOML type.
    #[error("{at}: `{key}` must be {expected}, not {found}")]
    WrongType {
        /// Where.
        at: Location,
        /// The dotted key, e.g. `environments.dev.port`.
        key: String,
        /// What it must be, e.g. `an integer`.
        expected: &'static str,
        /// The TOML type found, e.g. `a string`.
        found: &'static str,
    },
    /// A value of the right type that is not allowed: a bad identifier or mode, a conflict.
    #[error("{at}: `{key}`: {problem}")]
    Invalid {
        /// Where.
        at: Location,
        /// The dotted key.
        key: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// `depends_on` (or `shared_pool.modules`) names a module that has no `[modules.NAME]`.
    #[error(
        "{at}: `{key}` names module `{dependency}`, which has no [modules.{dependency}] section; declared modules: {}",
        if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
    )]
    UnknownModule {
        /// Where.
        at: Location,
        /// The dotted key, e.g. `modules.billing.depends_on`.
        key: String,
        /// The undeclared name.
        dependency: String,
        /// The `[modules.*]` sections there are.
        declared: Vec<String>,
    },
    /// Modules depending on each other in a circle.
    #[error(
        "`{}`: the modules depend on each other in a cycle: {}; remove one of these depends_on entries",
        path.display(),
        cycle.join(" → ")
    )]
    Cycle {
        /// The file.
        path: PathBuf,
        /// The cycle, its first module repeated at the end: `["a", "b", "a"]`.
        cycle: Vec<String>,
    },
    /// `url = "${VAR}"` (or `connection_string`) with `VAR` unset or empty.
    #[error(
        "environment `{environment}`: `{key}` is \"${{{variable}}}\" but the environment variable {variable} is not set (or empty); set it, or write the value in pgdbm.toml"
    )]
    UnsetVariable {
        /// The environment's name.
        environment: String,
        /// `url` or `connection_string`.
        key: &'static str,
        /// The variable.
        variable: String,
    },
    /// An environment that says neither a URL nor a host and database.
    #[error(
        "environment `{environment}` does not say where the database is: give url, connection_string, or host and database"
    )]
    NoConnection {
        /// The environment's name.
        environment: String,
    },
    /// No `[environments.NAME]` of that name.
    #[error(
        "no [environments.{name}] in `{}`; it declares: {}",
        path.display(),
        if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
    )]
    UnknownEnvironment {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The environments there are.
        declared: Vec<String>,
    },
}
