//! `pgdbm prepare [--check]`.

use crate::cli::PrepareArgs;
use crate::context::{Context, Result, fail};
use crate::exit::Code;

pub async fn run(_ctx: &Context, _args: PrepareArgs) -> Result<Code> {
    fail("not written yet")
}
