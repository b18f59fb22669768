//! `campusgw`: parses the command line, installs logging, and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use campus_gateway::config::Config;
use campus_gateway::telemetry::{init_logging, LogFormat};
use campus_gateway::{app, demo};

/// Campus Gateway: school safety sensors in, alarms and time series out.
#[derive(Debug, Parser)]
#[command(name = "campusgw", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole gateway on a simulated campus, with nothing installed.
    Demo {
        /// Port of the status page (and /healthz, /metrics).
        #[arg(long, default_value_t = 8080)]
        web_port: u16,
        /// Port of the embedded MQTT broker (0: any free port).
        #[arg(long, default_value_t = 1883)]
        mqtt_port: u16,
    },
    /// Run the gateway: the production daemon.
    Run {
        /// The configuration file.
        #[arg(long, short, env = "CAMPUSGW_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem.
    Check {
        /// The configuration file.
        #[arg(long, short, env = "CAMPUSGW_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => {
            init_logging(cli.log_format);
            let loaded = match Config::load(&config) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            for w in &loaded.warnings {
                tracing::warn!(key = %w.path, "{}", w.message);
            }
            runtime(|| async {
                let shutdown = app::signal_token();
                app::run(loaded.config, shutdown).await
            })
        }
        Command::Demo {
            web_port,
            mqtt_port,
        } => {
            init_logging(cli.log_format);
            runtime(|| async move {
                let shutdown = app::signal_token();
                demo::run(
                    demo::Options {
                        web_port,
                        mqtt_port,
                    },
                    shutdown,
                )
                .await
            })
        }
    }
}

fn runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("campusgw: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: OK ({} devices, {} MQTT topics, {} Modbus devices)",
                path.display(),
                loaded.config.devices.len(),
                loaded.config.mqtt.topics.len(),
                loaded.config.modbus.devices.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::from(2)
        }
    }
}
