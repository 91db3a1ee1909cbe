//! `pgdbm db …`.

use crate::cli::DbCommand;
use crate::context::{Context, Result, fail};
use crate::exit::Code;

pub async fn run(_ctx: &Context, _cmd: DbCommand) -> Result<Code> {
    fail("not written yet")
}
