//! The command line: `serve`, `tenant …`, `token …`. Configuration comes from flags, then the
//! environment (`MOONBORN_*`), once, at start-up.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::controller::model::{desired_from_snapshot, Bindings, BindingsChange};
use crate::controller::outbox::{self, WebhookConfig};
use crate::controller::{parse_schedule, report, Controller, Scope2, Trigger};
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
    /// Serve the SCIM API (and the admin API when an admin token is set), and run the controller.
    Serve(ServeArgs),
    /// Show what a reconcile would do for a tenant (the diff report).
    Plan {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Diff a SCIM ListResponse snapshot (e.g. desired-state/examples/acme-okta.json) against
        /// the actual state instead of the stored desired state.
        #[arg(long)]
        desired: Option<std::path::PathBuf>,
        /// Plan with these group bindings instead of the tenant's (the body of PUT
        /// …/group-bindings, e.g. desired-state/group-bindings.json): who would gain or lose which
        /// role. Nothing is stored.
        #[arg(long)]
        bindings: Option<std::path::PathBuf>,
    },
    /// Reconcile a tenant now (the whole tenant) and print the report.
    Reconcile {
        #[arg(long)]
        tenant: String,
        /// Show the plan, apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply a held plan: its fingerprint as shown by `plan`.
        #[arg(long)]
        approve: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
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

/// `serve` settings.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MOONBORN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Cron schedule of the drift-repair run over every tenant (5 fields, or 6 with seconds first).
    #[arg(long, env = "MOONBORN_DRIFT_REPAIR_SCHEDULE", default_value = "*/15 * * * *")]
    pub drift_repair_schedule: String,
    /// Cron schedule of the purge of soft-deleted users whose grace period is over.
    #[arg(long, env = "MOONBORN_PURGE_SCHEDULE", default_value = "0 3 * * *")]
    pub purge_schedule: String,
    /// Where outbox events (welcome emails, sign-outs, …) are delivered; without it they stay queued.
    #[arg(long, env = "MOONBORN_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 key of the `X-Moonborn-Signature` header.
    #[arg(long, env = "MOONBORN_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Bearer token of the admin API (`/v1/admin`); the admin API is off when unset.
    #[arg(long, env = "MOONBORN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Tenants reconciled at once.
    #[arg(long, env = "MOONBORN_CONTROLLER_WORKERS", default_value_t = 2)]
    pub controller_workers: usize,
    /// The benchmark's HTTP ceiling: serve only a fixed `GET /Users/{id}` body (no database, no auth).
    #[arg(long, hide = true)]
    pub bench_ceiling: bool,
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Html,
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
        Command::Serve(args) => serve(store, &cli.database_url, args).await,
        Command::Plan { tenant, format, desired, bindings } => {
            let t = store.tenant(&tenant).await.map_err(not_found("tenant"))?;
            let controller = Controller::new(store.clone());
            let stored = store.controller_state(t.id).await?.bindings;
            let preview = bindings.map(|path| bindings_file(&path, &stored)).transpose()?;
            let p = match (desired, &preview) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    let json: serde_json::Value =
                        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                    let bindings = preview.as_ref().unwrap_or(&stored);
                    let desired = desired_from_snapshot(&json, bindings).map_err(anyhow::Error::msg)?;
                    controller.plan(&t, Scope2::Snapshot(desired)).await?
                }
                (None, Some(b)) => controller.plan_with_bindings(&t, b).await?,
                (None, None) => controller.plan(&t, Scope2::Full).await?,
            };
            print_report(&p, format);
            Ok(())
        }
        Command::Reconcile { tenant, dry_run, approve, format } => {
            let t = store.tenant(&tenant).await.map_err(not_found("tenant"))?;
            let controller = Controller::new(store.clone());
            if dry_run {
                let p = controller.plan(&t, Scope2::Full).await?;
                print_report(&p, format);
                return Ok(());
            }
            let o = controller.reconcile(&t, Trigger::Operator, Scope2::Full, approve.as_deref()).await;
            controller.release_leases().await;
            let o = o?;
            print_report(&o.plan, format);
            if format == Format::Text {
                println!(
                    "run {}: {} ({} applied, {} held, {} stale)",
                    o.run_id, o.status, o.applied, o.skipped_held, o.stale
                );
            }
            Ok(())
        }
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

/// The bindings a `plan --bindings` file makes of the tenant's `current` ones.
fn bindings_file(path: &std::path::Path, current: &Bindings) -> anyhow::Result<Bindings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let change = BindingsChange::from_json(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a group-bindings body: {e}", path.display()))?;
    change.apply_to(current).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn print_report(p: &crate::controller::ComputedPlan, format: Format) {
    use std::io::IsTerminal as _;
    match format {
        Format::Text => print!("{}", report::text(p, std::io::stdout().is_terminal())),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report::json(p)).unwrap_or_default()),
        Format::Html => println!("{}", report::html(p)),
    }
}

async fn serve(store: Store, database_url: &str, args: ServeArgs) -> anyhow::Result<()> {
    let drift = parse_schedule(&args.drift_repair_schedule).map_err(anyhow::Error::msg)?;
    let purge = parse_schedule(&args.purge_schedule).map_err(anyhow::Error::msg)?;
    let listen = args.listen;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    if args.bench_ceiling {
        return serve_bench_ceiling(listener).await;
    }
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
    let state =
        AppState::new(store.clone()).with_admin_token(args.admin_token.filter(|t| !t.is_empty()).map(Into::into));
    state.controller.spawn(args.controller_workers, drift, purge);
    if store.backend() == crate::store::Backend::Postgres {
        state.controller.listen_for_pushes(database_url.to_string());
    }
    match args.webhook_url {
        Some(url) => {
            tracing::info!(%url, "delivering outbox events");
            let cfg = WebhookConfig { url, secret: args.webhook_secret, poll: std::time::Duration::from_millis(200) };
            tokio::spawn(outbox::run(store.clone(), cfg));
        }
        None => tracing::info!("no --webhook-url: outbox events stay queued (see the admin API's outbox)"),
    }
    if state.admin_token.is_none() {
        tracing::info!("no --admin-token: the admin API is disabled");
    }
    let controller = state.controller.clone();
    let app = router(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    controller.release_leases().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `serve --bench-ceiling` (moonborn-bench's HTTP ceiling): the same axum stack answering
/// `GET /Users/{id}` with a fixed SCIM user body of the usual size, without touching the database.
async fn serve_bench_ceiling(listener: TcpListener) -> anyhow::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    const BODY: &str = concat!(
        r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"00000000-0000-4000-8000-000000000000","#,
        r#""externalId":"00u0000000000000","userName":"user0000000@bench.example","#,
        r#""name":{"givenName":"Given0000000","familyName":"Family0000000"},"displayName":"Given0000000 Family0000000","#,
        r#""emails":[{"value":"user0000000@bench.example","type":"work","primary":true}],"active":true,"groups":[],"#,
        r#""meta":{"resourceType":"User","created":"2024-01-01T00:00:00.000Z","lastModified":"2024-01-01T00:00:00.000Z","#,
        r#""location":"http://127.0.0.1/v1/auth/scim/v2/Users/00000000-0000-4000-8000-000000000000","version":"W/\"1\""}}"#
    );
    let app = axum::Router::new()
        .route(
            &format!("{SCIM_BASE}/Users/{{id}}"),
            axum::routing::get(|| async { ([(CONTENT_TYPE, "application/scim+json")], BODY) }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tracing::info!(addr = %listener.local_addr()?, "serving the benchmark HTTP ceiling");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
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
