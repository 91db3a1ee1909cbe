//! `pgdbm tenants …`.

use crate::cli::TenantsCommand;
use crate::context::{Context, Result, fail};
use crate::exit::Code;

pub async fn run(_ctx: &Context, _cmd: TenantsCommand) -> Result<Code> {
    fail("not written yet")
}
