//! The `converge` command: `serve` runs the controller, `hash-password` makes a password
//! hash for the configuration.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use converge_server::config::Config;
use converge_server::{Controller, auth, serve};
use tracing_subscriber::EnvFilter;

/// Converge: a live-migration console for libvirt/QEMU clouds.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: the API, the live stream and the dashboard.
    Serve(ServeArgs),
    /// Read a password from standard input and print its argon2 hash for `[[users]]`.
    HashPassword,
}

/// Settings from the environment or the command line override the file's.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The TOML configuration file.
    #[arg(long, env = "CONVERGE_CONFIG")]
    config: PathBuf,
    /// Overrides `server.listen`.
    #[arg(long, env = "CONVERGE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Overrides `database.path`.
    #[arg(long, env = "CONVERGE_DATABASE")]
    database: Option<PathBuf>,
    /// Overrides `server.dist_dir`.
    #[arg(long, env = "CONVERGE_DIST_DIR")]
    dist_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_server(args),
        Command::HashPassword => hash_password(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("converge: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(database) = args.database {
        config.database.path = database;
    }
    if let Some(dist_dir) = args.dist_dir {
        config.server.dist_dir = dist_dir;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,tower_sessions=warn,sqlx=warn")),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listen = config.server.listen;
        let metrics_listen = config.metrics.as_ref().map(|m| m.listen);
        let controller = Controller::open(config).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        if let Some(addr) = metrics_listen {
            let metrics = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
            // Stops with the server: it watches the same shutdown token.
            tokio::spawn(converge_server::metrics::serve(
                metrics,
                controller.state.clone(),
            ));
        }
        serve(listener, controller, shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

fn hash_password() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password from standard input")?;
    // One trailing newline is the terminal's, not the password's.
    let password = input
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&input);
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    let hash = auth::hash_password(password).map_err(|err| anyhow::anyhow!("hashing: {err}"))?;
    println!("{hash}");
    Ok(())
}
