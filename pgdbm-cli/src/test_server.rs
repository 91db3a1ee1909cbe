//! `pgdbm test-server …` and `pgdbm test cleanup`.

use crate::cli::{TestCommand, TestServerCommand};
use crate::context::{Context, Result, fail};
use crate::exit::Code;

pub async fn run(_ctx: &Context, _cmd: TestServerCommand) -> Result<Code> {
    fail("not written yet")
}

pub async fn run_test(_ctx: &Context, _cmd: TestCommand) -> Result<Code> {
    fail("not written yet")
}
