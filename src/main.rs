//! The `moodstream` binary: parses the command line and runs one subcommand.

use std::process::ExitCode;

use moodstream::config::{self, Command};
use moodstream::feedback::{self, FeedbackCommand};
use moodstream::{bench, bench_api, classify, console, demo, telemetry, worker};

fn main() -> ExitCode {
    let cli = match config::parse_with_config_file() {
        Ok(cli) => cli,
        Err(config::ConfigFileError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(cfg) => worker::run(*cfg).await.map(|()| ExitCode::SUCCESS),
            Command::Classify(cfg) => {
                telemetry::init_cli_logging();
                classify::run(cfg).await.map(|failed| {
                    if failed == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    }
                })
            }
            Command::Bench(cfg) => {
                telemetry::init_cli_logging();
                bench::run(cfg).await.map(|()| ExitCode::SUCCESS)
            }
            Command::BenchApi(cfg) => {
                telemetry::init_cli_logging();
                bench_api::run(cfg).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Console(cfg) => console::run(*cfg).await.map(|()| ExitCode::SUCCESS),
            Command::Feedback(args) => match args.command {
                FeedbackCommand::Export(cfg) => {
                    telemetry::init_cli_logging();
                    feedback::export::run(*cfg).await.map(|_| ExitCode::SUCCESS)
                }
            },
            Command::DemoProduce(cfg) => {
                telemetry::init_cli_logging();
                demo::produce(cfg).await.map(|()| ExitCode::SUCCESS)
            }
        }
    });
    // Blocking threads (tokenizers, model) end with their channels; don't wait on stragglers.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
