//! Exit codes, documented in `pgdbm --help`.

use std::process::ExitCode;

/// What the process exits with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 0: done.
    Ok,
    /// 1: an error; the message says what and what to do.
    Error,
    /// 3: `migrate status --check` found pending, modified or missing files; `inspect health`
    /// found the database degraded.
    Pending,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(match c {
            Code::Ok => 0,
            Code::Error => 1,
            Code::Pending => 3,
        })
    }
}

/// The exit codes as `--help` lists them (clap exits 2 on a usage error).
pub const HELP: &str = "Exit codes:
  0  done
  1  error (nothing was changed unless the message says what was)
  2  usage error (unknown command or option, missing argument)
  3  `migrate status --check`: pending migrations, or drift (a modified or missing file);
     `inspect health`: the database needs attention (degraded)";
