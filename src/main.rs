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
    /// Post files to a running server's source, as the provider would, and print each
    /// file's answer (DMARC report files saved from email, say).
    Import {
        #[arg(
            long,
            short,
            env = "BACKCHANNEL_CONFIG",
            default_value = "config/example.toml"
        )]
        config: PathBuf,
        /// Source id to post to; its token, if it has one, is sent.
        #[arg(long)]
        source: String,
        /// Server base URL (default: http:// and the config's server.listen).
        #[arg(long)]
        url: Option<String>,
        /// Files to post, each as one request body.
        #[arg(required = true)]
        files: Vec<PathBuf>,
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
                        let n = notifications.len();
                        eprintln!("{n} notification{}", if n == 1 { "" } else { "s" });
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("replay: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Import {
            config,
            source,
            url,
            files,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            let Some(target) = config.sources.get(&source) else {
                let mut known: Vec<&String> = config.sources.keys().collect();
                known.sort();
                eprintln!(
                    "import: no source {source:?} in {} (sources: {})",
                    config.path.display(),
                    known
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return ExitCode::FAILURE;
            };
            let base = url.unwrap_or_else(|| format!("http://{}", reachable(config.listen)));
            let url = format!("{}/ingest/{source}", base.trim_end_matches('/'));
            let token = target.backchannel.bearer_token().map(str::to_string);
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(import(&url, token.as_deref(), &files))
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

/// The address a client on this host reaches a server listening on `listen` at: an
/// unspecified address (`0.0.0.0`, `[::]`) is answered on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Posts each file to `url` and prints its answer; fails if any file was refused or
/// could not be sent.
async fn import(url: &str, token: Option<&str>, files: &[PathBuf]) -> ExitCode {
    use http_body_util::{BodyExt, Full};
    backchannel::install_crypto_provider();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<bytes::Bytes>>(https);
    let mut refused = 0;
    for file in files {
        let body = match std::fs::read(file) {
            Ok(body) => body,
            Err(error) => {
                println!("{}: cannot read: {error}", file.display());
                refused += 1;
                continue;
            }
        };
        let mut request =
            axum::http::Request::post(url).header("content-type", "application/octet-stream");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match request.body(Full::new(bytes::Bytes::from(body))) {
            Ok(request) => request,
            Err(error) => {
                eprintln!("import: {url:?} is not a URL to post to: {error}");
                return ExitCode::FAILURE;
            }
        };
        let sent = tokio::time::timeout(std::time::Duration::from_secs(120), async {
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await
        .unwrap_or_else(|_| Err("no answer within 120 s".into()));
        match sent {
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body);
                println!("{}: {} {}", file.display(), status.as_u16(), text.trim());
                if !status.is_success() {
                    refused += 1;
                }
            }
            Err(error) => {
                println!("{}: not sent to {url}: {error}", file.display());
                refused += 1;
            }
        }
    }
    if refused > 0 {
        eprintln!("{refused} of {} files not accepted", files.len());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
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
