//! The `backchannel` command line: parses arguments and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use backchannel::config::Config;

#[derive(Parser)]
#[command(
    name = "backchannel",
    version,
    about = "Listens on the backchannels of the services you depend on \
             and tells the people who can act"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Config file.
        #[arg(
            long,
            short,
            env = "BACKCHANNEL_CONFIG",
            default_value = "config/example.toml"
        )]
        config: PathBuf,
        /// Listen on this address instead of the configured one.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Check a config file and say exactly what is wrong with it.
    Check {
        #[arg(
            long,
            short,
            env = "BACKCHANNEL_CONFIG",
            default_value = "config/example.toml"
        )]
        config: PathBuf,
    },
    /// Run saved payloads through the rules on their own timestamps and print the
    /// notifications that would go out.
    Replay {
        #[arg(
            long,
            short,
            env = "BACKCHANNEL_CONFIG",
            default_value = "config/example.toml"
        )]
        config: PathBuf,
        /// Source whose parser reads the payloads (default: the first source by id).
        #[arg(long)]
        source: Option<String>,
        /// Print one JSON object per notification.
        #[arg(long)]
        json: bool,
        /// Payload files, as the provider posted them.
        #[arg(required = true)]
        payloads: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    // sqlx logs every statement at DEBUG (the checkpointer alone runs five a second), so
    // it stays at ERROR unless BACKCHANNEL_LOG names it.
    let directives = std::env::var("BACKCHANNEL_LOG").unwrap_or_else(|_| "info".into());
    let directives = if directives.contains("sqlx") {
        directives
    } else {
        format!("{directives},sqlx=error")
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&directives)
                .unwrap_or_else(|_| "info,sqlx=error".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(config) => {
                for warning in &config.warnings {
                    eprintln!("warning: {}: {warning}", config.path.display());
                }
                println!(
                    "{}: ok ({}, {}, {}, {} enabled)",
                    config.path.display(),
                    count(config.sources.len(), "source"),
                    count(config.rules.len(), "rule"),
                    count(config.routes.len(), "route"),
                    count(config.contacts.len(), "contact"),
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Replay {
            config,
            source,
            json,
            payloads,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            match backchannel::replay::replay(&config, source.as_deref(), &payloads) {
                Ok(notifications) => {
                    for n in &notifications {
                        if json {
                            println!("{}", backchannel::replay::to_json_line(n));
                        } else {
                            let text = config
                                .templates
                                .render("log", backchannel::templates::Context::Log, n)
                                .unwrap_or_else(|e| e.to_string());
                            println!("{text}");
                        }
                    }
                    if !json {
                        eprintln!("{} notifications", notifications.len());
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("replay: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config, listen } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(async move {
                let running =
                    match backchannel::server::start(config, backchannel::clock::system(), listen)
                        .await
                    {
                        Ok(r) => r,
                        Err(error) => {
                            eprintln!("backchannel: {error:#}");
                            return ExitCode::FAILURE;
                        }
                    };
                let code = tokio::select! {
                    () = shutdown_signal() => ExitCode::SUCCESS,
                    reason = running.failed() => {
                        eprintln!("backchannel: {reason}");
                        ExitCode::FAILURE
                    }
                };
                tracing::info!("shutting down");
                running.stop().await;
                code
            })
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM, the signals a terminal and a service manager send.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// "1 rule", "2 rules".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
