//! The command line: `serve`, `tenant …`, `token …`. Configuration comes from flags, then the
//! environment (`MOONBORN_*`), once, at start-up.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::http::{router, AppState, SCIM_BASE};
use crate::store::{Store, StoreError, Tier};

/// SCIM 2.0 provisioning for Moonborn.
#[derive(Debug, Parser)]
#[command(name = "moonborn-scim", version, about)]
pub struct Cli {
    /// Database URL: sqlite://FILE (created and migrated on first use) or postgres://…
    #[arg(long, global = true, env = "MOONBORN_DATABASE_URL", default_value = "sqlite://moonborn-scim.db")]
    pub database_url: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the SCIM API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MOONBORN_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage SCIM bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        slug: String,
        #[arg(long, value_enum, default_value = "enterprise")]
        tier: Tier,
    },
    /// List tenants.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a SCIM token; the secret is printed once, alone on the last line.
    Create {
        #[arg(long)]
        tenant: String,
    },
    /// List a tenant's tokens (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

/// Runs the CLI; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_found(what: &str) -> impl Fn(StoreError) -> anyhow::Error + '_ {
    move |e| match e {
        StoreError::NotFound => anyhow::anyhow!("{what} not found"),
        other => anyhow::Error::new(other),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let store =
        Store::open(&cli.database_url).await.with_context(|| format!("opening database {}", cli.database_url))?;
    match cli.command {
        Command::Serve { listen } => serve(store, listen).await,
        Command::Tenant { command: TenantCommand::Create { slug, tier } } => {
            let t = store.create_tenant(&slug, tier).await?;
            println!("created tenant {} (tier {})", t.slug, t.tier.as_str());
            Ok(())
        }
        Command::Tenant { command: TenantCommand::List } => {
            println!("{:<24} {:<11} {:<10} created", "slug", "tier", "generation");
            for t in store.list_tenants().await? {
                println!("{:<24} {:<11} {:<10} {}", t.slug, t.tier.as_str(), t.generation, t.created_at);
            }
            Ok(())
        }
        Command::Token { command: TokenCommand::Create { tenant } } => {
            let (info, secret) = store.create_token(&tenant).await.map_err(not_found("tenant"))?;
            println!("token {} for tenant {tenant} (shown once; store it now):", info.id);
            println!("{secret}");
            Ok(())
        }
        Command::Token { command: TokenCommand::List { tenant } } => {
            println!("{:<36} {:<14} {:<24} {:<24} revoked", "id", "prefix", "created", "last used");
            for t in store.list_tokens(&tenant).await.map_err(not_found("tenant"))? {
                println!(
                    "{:<36} {:<14} {:<24} {:<24} {}",
                    t.id,
                    t.prefix,
                    t.created_at,
                    t.last_used_at.as_deref().unwrap_or("never"),
                    t.revoked_at.as_deref().unwrap_or("no")
                );
            }
            Ok(())
        }
        Command::Token { command: TokenCommand::Revoke { id } } => {
            if store.revoke_token(&id).await? {
                println!("revoked token {id}");
                Ok(())
            } else {
                anyhow::bail!("no live token with id {id}")
            }
        }
    }
}

async fn serve(store: Store, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    if store.tenant_count().await? == 0 {
        store.create_tenant("default", Tier::Enterprise).await?;
        let (_, secret) = store.create_token("default").await?;
        println!("Created the Enterprise tenant `default` and its SCIM token (shown once; store it now):");
        println!();
        println!("    {secret}");
        println!();
        println!("Try it:");
        println!("    curl -s -H 'Authorization: Bearer {secret}' http://{addr}{SCIM_BASE}/Users");
        println!();
    }
    tracing::info!(%addr, backend = ?store.backend(), "serving SCIM at http://{addr}{SCIM_BASE}");
    let app = router(AppState::new(store.clone()));
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
