//! The `graph-emulator` command: serves the Graph emulator over HTTPS for tests and migration
//! rehearsals. It loads a tenant fixture, writes the throwaway CA to `--ca-out`, prints one
//! ready line to stdout, logs to stderr and stops on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use graph_emulator::{Options, Tenant};

/// Serve the Microsoft Graph emulator (token endpoint, /v1.0 users, invitations, delta,
/// $batch, throttling) with a generated certificate.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Tenant fixture (JSON; see docs/emulator.md).
    #[arg(long)]
    tenant: PathBuf,
    /// Where to write the PEM of the throwaway CA that signed the server certificate.
    #[arg(long)]
    ca_out: PathBuf,
    /// 1.0 = real throttling windows; 0.01 = windows 100 times shorter (limits unchanged).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// The Graph resource tokens are issued for.
    #[arg(long, default_value = graph_emulator::DEFAULT_GRAPH_RESOURCE)]
    graph_resource: String,
    /// The login base accepted in client-assertion audiences (besides the emulator's own URL).
    #[arg(long, default_value = graph_emulator::DEFAULT_LOGIN_BASE)]
    login_base: String,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3599)]
    token_lifetime: u64,
    /// Throttling model: `window` (never more than a limit in any window of its length) or
    /// `bucket` (a token bucket that starts full and refills continuously).
    #[arg(long, default_value = "window")]
    throttle_model: graph_emulator::ThrottleModel,
    /// `allowInvitesFrom` of the tenant's authorization policy (`none`,
    /// `adminsAndGuestInviters`, `adminsGuestInvitersAndAllMembers`, `everyone`).
    #[arg(long, default_value = "everyone", value_parser = ["none", "adminsAndGuestInviters", "adminsGuestInvitersAndAllMembers", "everyone"])]
    allow_invites_from: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRAPH_EMULATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The emulator's own errors already name their cause; others print their chain.
            match err.downcast_ref::<graph_emulator::Error>() {
                Some(e) => {
                    eprintln!("graph-emulator: error: {e}");
                    eprintln!("help: {}", e.help());
                }
                None => {
                    eprintln!("graph-emulator: error: {err:#}");
                    eprintln!("help: see graph-emulator --help and docs/emulator.md");
                }
            }
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Install the handlers before announcing readiness, so a SIGTERM sent right after the
        // ready line still stops the emulator cleanly.
        let terminate = terminate_signal()?;
        let tenant = Tenant::from_json_file(&args.tenant)?;
        let users = tenant.users.len();
        let tenant_id = tenant.tenant_id.clone();
        let mut opts = Options::new(args.listen, tenant);
        opts.time_scale = args.time_scale;
        opts.graph_resource = args.graph_resource;
        opts.login_base = args.login_base;
        opts.token_lifetime_secs = args.token_lifetime;
        opts.throttle_model = args.throttle_model;
        opts.allow_invites_from = args.allow_invites_from;
        let running = graph_emulator::spawn(opts).await?;
        std::fs::write(&args.ca_out, &running.ca_pem)
            .with_context(|| format!("writing the CA to {}", args.ca_out.display()))?;
        println!(
            "graph-emulator: listening on {} (tenant {tenant_id}, {users} users)",
            running.base_url
        );
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
            () = terminate => {}
        }
        tracing::info!("Shutting down.");
        running.shutdown().await;
        Ok(())
    })
}

/// Resolves on SIGTERM; installed before the ready line is printed.
#[cfg(unix)]
fn terminate_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    Ok(async move {
        signal.recv().await;
    })
}

/// There is no SIGTERM off Unix; Ctrl+C still stops the emulator.
#[cfg(not(unix))]
fn terminate_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(std::future::pending())
}
