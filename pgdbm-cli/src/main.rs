//! `pgdbm`: the command line of pgdbm. See `pgdbm --help`; exit codes are in [`exit`].

mod cli;
mod compat;
mod context;
mod db;
mod drift;
mod exit;
mod inspect;
mod lint;
mod migrate;
mod output;
mod prepare;
mod tenants;
mod test_server;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use context::Context;

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::init_color(cli.global.color);
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "pgdbm", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        let mut ctx = Context::new(&cli.global)?;
        if let Some(access) = cli.command.access() {
            ctx.locate(access).await?;
        }
        match cli.command {
            Command::Migrate(cmd) => migrate::run(&ctx, cmd).await,
            Command::Db { command } => db::run(&ctx, command).await,
            Command::Tenants { command } => tenants::run(&ctx, command).await,
            Command::TestServer { command } => test_server::run(&ctx, command).await,
            Command::Test { command } => test_server::run_test(&ctx, command).await,
            Command::Inspect { command } => inspect::run(&ctx, command).await,
            // --check-compat builds on prepare's scratch database; prepare knows nothing of it.
            Command::Prepare(args) => match &args.check_compat {
                Some(previous) => compat::run(&ctx, previous, args.new_against_old).await,
                None => prepare::run(&ctx, args).await,
            },
            Command::Completions { .. } => unreachable!("handled above"),
        }
    });
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            output::error(&e);
            exit::Code::Error.into()
        }
    }
}
