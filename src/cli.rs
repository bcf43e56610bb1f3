//! The command line: `serve`, `tenant …`, `token …`. Configuration comes from flags, then the
//! environment (`MOONBORN_*`), once, at start-up.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::app::{App, Config};
use crate::controller::{parse_schedule, report, Approval, Controller, ControllerError, Target, Trigger};
use crate::domain::SafetyChange;
use crate::domain::{desired_from_snapshot, Bindings, BindingsChange};
use crate::http::SCIM_BASE;
use crate::outbox::{self, WebhookConfig};
use crate::store::{Store, StoreError, Tier};

/// SCIM 2.0 provisioning for Moonborn.
#[derive(Debug, Parser)]
#[command(name = "moonborn-scim", version, about)]
pub struct Cli {
    /// Database URL: sqlite://FILE (created and migrated on first use) or postgres://…
    /// [default: sqlite://moonborn-scim.db; or read from the file MOONBORN_DATABASE_URL_FILE names]
    #[arg(long, global = true, env = "MOONBORN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PEM file of CA certificates trusted by every outbound TLS connection (webhooks,
    /// PostgreSQL), besides the public roots built in.
    #[arg(long, global = true, env = "MOONBORN_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Colour in text reports and logs: auto (on a terminal, unless NO_COLOR is set), always,
    /// never.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub color: Color,
    /// Log lines (on stderr) as text for people or one JSON object per line for a collector.
    #[arg(long, global = true, env = "MOONBORN_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the SCIM API (and the admin API when an admin token is set), and run the controller.
    Serve(Box<ServeArgs>),
    /// Create the database if there is none and apply pending migrations, then exit (`serve`
    /// does this at start too; other commands need a database that exists).
    Migrate,
    /// Copy a SQLite database, consistent, while the service runs (SQLite's `VACUUM INTO`);
    /// for PostgreSQL use pg_dump.
    Backup {
        /// The file to write; it must not exist.
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Show what a reconcile would do for a tenant (the diff report).
    Plan {
        /// The tenant (its slug).
        #[arg(long)]
        tenant: String,
        /// How to print the report.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Diff a SCIM ListResponse snapshot (e.g. desired-state/examples/acme-okta.json) against
        /// the actual state instead of the stored desired state.
        #[arg(long)]
        desired: Option<std::path::PathBuf>,
        /// Exit 0 when there is nothing to do, 2 when there are changes, 3 when the safety valve
        /// holds some (1 on errors).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Plan with these group bindings instead of the tenant's (the body of PUT
        /// …/group-bindings, e.g. desired-state/group-bindings.json): who would gain or lose which
        /// role. Nothing is stored.
        #[arg(long)]
        bindings: Option<std::path::PathBuf>,
    },
    /// Reconcile a tenant now (the whole tenant) and print the report.
    Reconcile {
        /// The tenant (its slug).
        #[arg(long)]
        tenant: String,
        /// Show the plan, apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply a held plan: its fingerprint as shown by `plan`.
        #[arg(long)]
        approve: Option<String>,
        /// `json` prints the run (run_id, status, applied, held, waiting, stale) with its report.
        /// How to print the report.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Exit 0 when there was nothing to do, 2 when changes were applied, 3 when the safety
        /// valve held some (1 on errors).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Apply a held plan exactly as shown: the whole-tenant plan with this fingerprint.
    Approve {
        /// The tenant (its slug).
        #[arg(long)]
        tenant: String,
        /// The plan's fingerprint (`plan`, `safety`, or the held run's log line show it).
        fingerprint: String,
        /// How to print the report.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Let what the safety valve holds through, once; says how many changes it applied.
    Release {
        /// The tenant (its slug).
        #[arg(long)]
        tenant: String,
    },
    /// A tenant's recent controller runs, newest first.
    Runs {
        /// The tenant (its slug).
        #[arg(long)]
        tenant: String,
        /// How many runs to show (at most 1,000).
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// How to print the report.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Show a tenant's safety valve (and its hold); with options, change it.
    Safety(SafetyArgs),
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
    /// Manage operators: the named people who sign in to the console (/console) and use the
    /// admin API.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Create an operator; its token is printed once, alone on the last line.
    Create {
        /// The operator's name, as the audit trail shows it (letters, digits, '.', '_', '-', '@').
        name: String,
        /// Scope the operator to one tenant (that tenant's admin); without it, every tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List operators (never their tokens).
    List,
    /// Revoke an operator by name: its token stops working and its console sessions end.
    Revoke {
        /// The operator's name.
        name: String,
    },
}

/// `safety` options: an absent one keeps its value.
#[derive(Debug, clap::Args)]
pub struct SafetyArgs {
    /// The tenant (its slug).
    #[arg(long)]
    pub tenant: String,
    /// Hold when destructive changes exceed this share of the tenant's SCIM users (0-100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub percent: Option<u32>,
    /// Hold only when the destructive changes are also at least this many users.
    #[arg(long)]
    pub min_users: Option<u64>,
    /// Judge a burst of destructive pushes once none has come for this long (seconds).
    #[arg(long)]
    pub settle_secs: Option<f64>,
    /// Judge a burst at most this long after its first destructive push (seconds).
    #[arg(long)]
    pub max_wait_secs: Option<f64>,
    /// Switch the valve on.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Switch the valve off: every change is applied at once, nothing is held.
    #[arg(long)]
    pub disable: bool,
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
    /// Standard Webhooks signing secret, whsec_<base64>; required with --webhook-url. Repeat
    /// it, or separate secrets by commas or spaces, to sign with each while rotating (or read
    /// from the file MOONBORN_WEBHOOK_SECRET_FILE names).
    #[arg(long, env = "MOONBORN_WEBHOOK_SECRET", hide_env_values = true, action = clap::ArgAction::Append)]
    pub webhook_secret: Vec<String>,
    /// Bearer token of the admin API (`/v1/admin`); the admin API is off when unset (or read
    /// from the file MOONBORN_ADMIN_TOKEN_FILE names).
    #[arg(long, env = "MOONBORN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Also serve `GET /metrics` (Prometheus, no auth, nothing else) on this address: a port
    /// for a private network only.
    #[arg(long, env = "MOONBORN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token that reads `GET /metrics` on the main listener and opens nothing else (or
    /// read from the file MOONBORN_METRICS_TOKEN_FILE names).
    #[arg(long, env = "MOONBORN_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key. Without it the
    /// service speaks plain HTTP (put a TLS proxy in front: see README, Deploying).
    #[arg(long, env = "MOONBORN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "MOONBORN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The URL IdPs reach this service at, e.g. https://scim.example.com: resources are located
    /// under it (`meta.location`), whatever Host a request carried.
    #[arg(long, env = "MOONBORN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Proxies (CIDRs or addresses, comma-separated or repeated) whose X-Forwarded-Host and
    /// X-Forwarded-Proto are believed; those headers from anyone else are ignored.
    #[arg(long, env = "MOONBORN_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<String>,
    /// A request not answered in this time is answered 503 (seconds).
    #[arg(long, env = "MOONBORN_REQUEST_TIMEOUT", default_value_t = 30.0)]
    pub request_timeout: f64,
    /// Time a client has to send a request's headers, from the connection's start or its
    /// previous response; also the keep-alive idle timeout (seconds).
    #[arg(long, env = "MOONBORN_HEADER_TIMEOUT", default_value_t = 30.0)]
    pub header_timeout: f64,
    /// Connections served at once (more wait in the listen backlog) [default: the open-file
    /// limit less what the database and the rest of the process need].
    #[arg(long, env = "MOONBORN_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// SCIM requests per second allowed per tenant (0: no limit); over it, SCIM 429 with
    /// Retry-After. Far above any IdP's documented pace.
    #[arg(long, env = "MOONBORN_RATE_LIMIT", default_value_t = 200)]
    pub rate_limit: u32,
    /// Requests a tenant may send at once above --rate-limit before 429s begin.
    #[arg(long, env = "MOONBORN_RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,
    /// Tenants reconciled at once.
    #[arg(long, env = "MOONBORN_CONTROLLER_WORKERS", default_value_t = 2)]
    pub controller_workers: usize,
    /// On SIGTERM/SIGINT, how long `/readyz` answers 503 while requests are still served (so a
    /// load balancer stops sending new ones), before in-flight requests are drained (seconds).
    #[arg(long, env = "MOONBORN_SHUTDOWN_DELAY", default_value_t = 5.0)]
    pub shutdown_delay: f64,
    /// How long the drain of in-flight requests may take before the process exits anyway
    /// (seconds).
    #[arg(long, env = "MOONBORN_DRAIN_TIMEOUT", default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// The benchmark's HTTP ceiling: serve only a fixed `GET /Users/{id}` body (no database, no auth).
    #[arg(long, hide = true)]
    pub bench_ceiling: bool,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    /// Whether to colour a stream that is (or is not) a terminal; `NO_COLOR` (any non-empty
    /// value, no-color.org) turns `auto` off.
    pub fn on(self, terminal: bool) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }
}

/// The `--color` choice, for the reports printed after start-up.
static COLOR: std::sync::OnceLock<Color> = std::sync::OnceLock::new();

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
        /// 1-63 lowercase letters, digits or '-'.
        slug: String,
        /// The tenant's plan; only Enterprise tenants may use SCIM.
        #[arg(long, value_enum, default_value = "enterprise")]
        tier: Tier,
    },
    /// List tenants.
    List,
    /// Offboard a tenant: revoke its tokens, delete its SCIM users and groups, disable the users
    /// created by hand, soft-delete every provisioned user (purged after the grace period). The
    /// tenant stays listed as deleted, with its audit log.
    Delete {
        /// The tenant's slug.
        slug: String,
        /// Confirm: without it nothing is done and what would be removed is shown.
        #[arg(long)]
        yes: bool,
    },
    /// Move a tenant to another tier (only Enterprise tenants may use SCIM).
    SetTier {
        /// The tenant's slug.
        slug: String,
        /// The new tier.
        #[arg(value_enum)]
        tier: Tier,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a SCIM token; the secret is printed once, alone on the last line.
    Create {
        /// The tenant (its slug).
        #[arg(long)]
        tenant: String,
        /// What the token is for (the IdP connection), shown in token lists.
        #[arg(long)]
        name: Option<String>,
    },
    /// List a tenant's tokens (never their secrets).
    List {
        /// The tenant (its slug).
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a tenant's token by id (a token of another tenant is refused).
    Revoke {
        /// The tenant the token belongs to.
        /// The tenant (its slug).
        #[arg(long)]
        tenant: String,
        /// The token's id (`token list` shows it).
        id: String,
    },
}

/// Runs the CLI; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = COLOR.set(cli.color);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(cli.color.on(std::io::IsTerminal::is_terminal(&std::io::stderr()))).init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A store error of a command about tenant `slug` of database `db`: a tenant that is not there
/// is named, with the database looked in (a wrong `--database-url` is the usual cause).
fn no_tenant<'a>(slug: &'a str, db: &'a str) -> impl Fn(StoreError) -> anyhow::Error + 'a {
    move |e| match e {
        StoreError::NotFound => {
            anyhow::anyhow!(
                "no tenant {slug:?} in the database {} (`tenant list` shows them)",
                crate::store::redact_url(db)
            )
        }
        other => anyhow::Error::new(other),
    }
}

/// `--detailed-exitcode` (Terraform's convention): 0 nothing to do, 2 changes, 3 held.
fn detailed(p: &crate::controller::ComputedPlan, on: bool) -> u8 {
    match (on, p.changes.is_empty(), p.held.is_some()) {
        (false, _, _) | (true, true, _) => 0,
        (true, false, true) => 3,
        (true, false, false) => 2,
    }
}

/// A run's outcome as `--format json` prints it: the run, then its report.
fn outcome_json(o: &crate::controller::RunOutcome) -> serde_json::Value {
    let recorded = o.status.recorded();
    let (held, waiting) = o.held_and_waiting();
    serde_json::json!({
        "run_id": recorded.then_some(o.run_id.as_str()),
        "status": o.status,
        "applied": o.applied,
        "held": held,
        "waiting": waiting,
        "stale": o.stale,
        "report": report::json(&o.plan),
    })
}

/// Prints a run: its report, then one line on what it did (or, as JSON, the run with its report).
fn print_outcome(o: &crate::controller::RunOutcome, format: Format) {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&outcome_json(o)).unwrap_or_default());
        return;
    }
    print_report(&o.plan, format);
    if format == Format::Text {
        println!("run {}: {} ({} applied, {} held, {} stale)", o.run_id, o.status, o.applied, o.skipped_held, o.stale);
    }
}

/// A secret given directly (flag or `NAME`), else read from the file `NAME_FILE` names (its
/// trailing newline dropped: how Docker and Kubernetes secrets are mounted).
///
/// # Errors
/// Both given, or the file cannot be read (the message names the file, never its content).
pub fn secret(direct: Option<String>, name: &str) -> anyhow::Result<Option<String>> {
    let file_var = format!("{name}_FILE");
    match (direct, std::env::var_os(&file_var)) {
        (Some(_), Some(_)) => anyhow::bail!("both {name} (or its flag) and {file_var} are set; set one"),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(path)) => {
            let path = std::path::PathBuf::from(path);
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading {file_var} ({})", path.display()))?;
            let v = text.trim_end_matches(['\n', '\r']).to_string();
            anyhow::ensure!(!v.is_empty(), "{file_var} ({}) is empty", path.display());
            Ok(Some(v))
        }
        (None, None) => Ok(None),
    }
}

/// The certificates of `--ca-file`.
fn ca_certificates(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).with_context(|| format!("reading --ca-file {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("--ca-file {} is not a PEM certificate bundle", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "--ca-file {} holds no PEM certificate", path.display());
    Ok(certs)
}

/// The webhook settings of `serve`, checked before anything starts: a URL needs a secret, and
/// every secret must be in the `whsec_<base64>` form (errors never quote one).
fn webhook_config(args: &ServeArgs, extra_roots: &[reqwest::Certificate]) -> anyhow::Result<Option<WebhookConfig>> {
    let given = (!args.webhook_secret.is_empty()).then(|| args.webhook_secret.join(" "));
    let secrets = secret(given, "MOONBORN_WEBHOOK_SECRET")?;
    let Some(url) = &args.webhook_url else {
        if secrets.is_some() {
            tracing::warn!("a webhook secret is set but no --webhook-url: it is not used");
        }
        return Ok(None);
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("--webhook-url is not a URL: {e}"))?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "http" | "https"),
        "--webhook-url must be an http:// or https:// URL, not {}://",
        parsed.scheme()
    );
    let Some(secrets) = secrets else {
        anyhow::bail!(
            "--webhook-url is set but no webhook secret: every event is signed, so set --webhook-secret, \
             MOONBORN_WEBHOOK_SECRET or MOONBORN_WEBHOOK_SECRET_FILE to whsec_<base64 of 24 to 64 random bytes> \
             (e.g. whsec_$(openssl rand -base64 32))"
        );
    };
    let secrets = outbox::parse_secrets(&secrets).map_err(anyhow::Error::msg)?;
    Ok(Some(WebhookConfig {
        url: url.clone(),
        secrets,
        extra_roots: extra_roots.to_vec(),
        poll: std::time::Duration::from_millis(200),
    }))
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let extra_roots = cli.ca_file.as_deref().map(ca_certificates).transpose()?.unwrap_or_default();
    let webhook = match &cli.command {
        Command::Serve(args) => webhook_config(args, &extra_roots)?,
        _ => None,
    };
    let mut database_url = secret(cli.database_url.clone(), "MOONBORN_DATABASE_URL")?
        .unwrap_or_else(|| "sqlite://moonborn-scim.db".to_string());
    if let Some(ca) = &cli.ca_file {
        database_url = crate::store::with_root_cert(&database_url, ca)?;
    }
    let creates = matches!(cli.command, Command::Serve(_) | Command::Migrate);
    let new_file = crate::store::sqlite_file(&database_url).filter(|f| !f.exists());
    let opened = if creates { Store::open(&database_url).await } else { Store::open_existing(&database_url).await };
    let store = opened.with_context(|| format!("opening database {}", crate::store::redact_url(&database_url)))?;
    if let Some(f) = new_file.filter(|f| f.exists()) {
        let shown = std::fs::canonicalize(&f).unwrap_or(f);
        tracing::info!(file = %shown.display(), "created a new SQLite database");
    }
    let db = database_url.clone();
    let tenant = |slug: String| {
        let (store, db) = (store.clone(), db.clone());
        async move { store.tenant(&slug).await.map_err(no_tenant(&slug, &db)) }
    };
    match cli.command {
        Command::Serve(args) => serve(store, &database_url, *args, webhook).await.map(|()| 0),
        Command::Migrate => {
            println!("database {} is migrated to this version", crate::store::redact_url(&database_url));
            store.close().await;
            Ok(0)
        }
        Command::Backup { to } => {
            anyhow::ensure!(
                store.backend() == crate::store::Backend::Sqlite,
                "backup copies a SQLite database; back PostgreSQL up with pg_dump"
            );
            anyhow::ensure!(!to.exists(), "{} exists; backup writes a new file", to.display());
            let path = to.to_str().context("the backup path is not UTF-8")?;
            sqlx::query("VACUUM INTO $1")
                .bind(path)
                .execute(store.pool())
                .await
                .with_context(|| format!("writing the backup {}", to.display()))?;
            let bytes = std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
            println!("backed up {} to {} ({bytes} bytes)", crate::store::redact_url(&database_url), to.display());
            store.close().await;
            Ok(0)
        }
        Command::Plan { tenant: slug, format, desired, bindings, detailed_exitcode } => {
            let t = tenant(slug).await?;
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
                    controller.plan(&t, Target::Snapshot(desired)).await?
                }
                (None, Some(b)) => controller.preview_bindings(&t, b).await?,
                (None, None) => controller.plan(&t, Target::Full).await?,
            };
            print_report(&p, format);
            Ok(detailed(&p, detailed_exitcode))
        }
        Command::Reconcile { tenant: slug, dry_run, approve, format, detailed_exitcode } => {
            let t = tenant(slug).await?;
            let controller = Controller::new(store.clone());
            if dry_run {
                let p = controller.plan(&t, Target::Full).await?;
                print_report(&p, format);
                return Ok(detailed(&p, detailed_exitcode));
            }
            let by = cli_actor();
            let approval = approve.as_deref().map_or(Approval::None, |fp| Approval::Fingerprint(fp, &by));
            let o = controller.reconcile(&t, Trigger::Operator, Target::Full, approval).await;
            controller.release_leases().await;
            let o = o?;
            print_outcome(&o, format);
            Ok(detailed(&o.plan, detailed_exitcode))
        }
        Command::Approve { tenant: slug, fingerprint, format } => {
            let t = tenant(slug).await?;
            let fp = fingerprint.trim().to_ascii_lowercase();
            if fp.is_empty() || fp.len() > 128 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("{fingerprint:?} is not a plan fingerprint");
            }
            let controller = Controller::new(store.clone());
            let o = controller
                .reconcile(&t, Trigger::Operator, Target::Full, Approval::Fingerprint(&fp, &cli_actor()))
                .await;
            controller.release_leases().await;
            match o {
                Ok(o) => print_outcome(&o, format),
                // Said, not failed: the plan shown was applied (a second approval is harmless).
                Err(e @ ControllerError::AlreadyApplied { .. }) => println!("{e}"),
                Err(e) => return Err(e.into()),
            }
            Ok(0)
        }
        Command::Release { tenant: slug } => {
            let t = tenant(slug).await?;
            let controller = Controller::new(store.clone());
            let o = controller.release(&t, &cli_actor()).await;
            controller.release_leases().await;
            match o? {
                Some(o) => println!("{}", o.release_line(&t.slug)),
                None => println!("tenant {} holds nothing; nothing was run", t.slug),
            }
            Ok(0)
        }
        Command::Runs { tenant: slug, limit, format } => {
            let t = tenant(slug).await?;
            let runs = store.list_runs(t.id, limit.clamp(1, 1000)).await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "runs": runs }))?);
                return Ok(0);
            }
            println!("{:<36} {:<9} {:<10} {:<24} summary", "run", "trigger", "status", "finished");
            for r in runs {
                let line = r.summary.as_ref().and_then(|s| s.get("line")).and_then(|l| l.as_str()).unwrap_or("");
                let hold = r.summary.as_ref().and_then(|s| s.get("hold")).and_then(|l| l.as_str());
                println!(
                    "{:<36} {:<9} {:<10} {:<24} {line}{}{}",
                    r.id,
                    r.trigger,
                    r.status,
                    r.finished_at.as_deref().unwrap_or("-"),
                    hold.map(|h| format!(" [{h}]")).unwrap_or_default(),
                    r.error.as_deref().map(|e| format!(" error: {e}")).unwrap_or_default()
                );
            }
            Ok(0)
        }
        Command::Safety(a) => {
            let t = tenant(a.tenant.clone()).await?;
            let change = SafetyChange {
                percent: a.percent.map(i64::from),
                min_users: a.min_users.map(|n| n.min(i64::MAX as u64) as i64),
                enabled: if a.enable {
                    Some(true)
                } else if a.disable {
                    Some(false)
                } else {
                    None
                },
                settle_secs: a.settle_secs,
                max_wait_secs: a.max_wait_secs,
            };
            if change != SafetyChange::default() {
                let current = store.controller_state(t.id).await?.safety;
                let new = change.apply(current).map_err(anyhow::Error::msg)?;
                store.set_safety(t.id, new, &cli_actor()).await?;
                // A running server applies it on its next run of the tenant (a push, or the
                // drift-repair schedule).
            }
            let view = store.controller_state(t.id).await?.safety_json(&t.slug);
            println!("{}", serde_json::to_string_pretty(&view)?);
            Ok(0)
        }
        Command::Tenant { command: TenantCommand::Create { slug, tier } } => {
            let t = store.create_tenant(&slug, tier).await?;
            println!("created tenant {} (tier {})", t.slug, t.tier.as_str());
            Ok(0)
        }
        Command::Tenant { command: TenantCommand::SetTier { slug, tier } } => {
            let t = store.set_tier(&slug, tier, &cli_actor()).await.map_err(no_tenant(&slug, &database_url))?;
            println!("tenant {} is on the {} tier", t.slug, t.tier.as_str());
            Ok(0)
        }
        Command::Tenant { command: TenantCommand::Delete { slug, yes } } => {
            let t = tenant(slug).await?;
            if !yes {
                let (users, groups, manual) = store.offboarding_work(t.id).await?;
                println!(
                    "tenant {} has {} SCIM users, {} SCIM groups and {} active users created by hand; \
                     `tenant delete {} --yes` revokes its tokens, soft-deletes every user (purged after the grace \
                     period) and disables those created by hand",
                    t.slug,
                    users.len(),
                    groups.len(),
                    manual.len(),
                    t.slug
                );
                return Ok(1);
            }
            let controller = Controller::new(store.clone());
            let o = controller.offboard(&t, &cli_actor()).await;
            controller.release_leases().await;
            let o = o.with_context(|| format!("offboarding tenant {} (run it again to finish)", t.slug))?;
            println!(
                "tenant {} deleted: tokens revoked; {} SCIM users and {} groups removed; {} users soft-deleted \
                 (purged after the grace period); {} users created by hand disabled",
                t.slug, o.scim_users, o.scim_groups, o.deleted, o.disabled
            );
            Ok(0)
        }
        Command::Tenant { command: TenantCommand::List } => {
            println!("{:<24} {:<11} {:<9} {:<26} last run", "slug", "tier", "state", "held");
            for t in store.list_tenants().await? {
                let st = store.tenant_status(t.id).await?;
                let held = st.held.as_ref().map_or_else(
                    || "-".to_string(),
                    |h| format!("{} changes since {}", h["destructive"], h["since"].as_str().unwrap_or("?")),
                );
                let last = st.last_run.as_ref().map_or_else(
                    || "-".to_string(),
                    |r| format!("{} {} ({})", r.finished_at.as_deref().unwrap_or("running"), r.status, r.trigger),
                );
                let state = if t.deleted_at.is_some() { "deleted" } else { st.state };
                println!("{:<24} {:<11} {:<9} {:<26} {last}", t.slug, t.tier.as_str(), state, held);
            }
            Ok(0)
        }
        Command::Token { command: TokenCommand::Create { tenant, name } } => {
            let (info, secret) = store
                .issue_token(&tenant, name.as_deref(), &cli_actor())
                .await
                .map_err(no_tenant(&tenant, &database_url))?;
            println!("token {} for tenant {tenant} (shown once; store it now):", info.id);
            println!("{secret}");
            Ok(0)
        }
        Command::Operator { command: OperatorCommand::Create { name, tenant } } => {
            let (info, secret) = match &tenant {
                Some(slug) => store.create_operator(&name, Some(slug)).await.map_err(no_tenant(slug, &database_url))?,
                None => store.create_operator(&name, None).await?,
            };
            let scope = info.tenant_slug.as_deref().map_or("every tenant".to_string(), |s| format!("tenant {s}"));
            println!(
                "operator {} for {scope}: sign in at /console with this token (shown once; store it now):",
                info.name
            );
            println!("{secret}");
            Ok(0)
        }
        Command::Operator { command: OperatorCommand::List } => {
            println!("{:<24} {:<16} {:<12} {:<24} {:<24} revoked", "name", "tenant", "prefix", "created", "last used");
            for o in store.list_operators().await? {
                println!(
                    "{:<24} {:<16} {:<12} {:<24} {:<24} {}",
                    o.name,
                    o.tenant_slug.as_deref().unwrap_or("(all)"),
                    o.prefix,
                    o.created_at,
                    o.last_used_at.as_deref().unwrap_or("never"),
                    o.revoked_at.as_deref().unwrap_or("no")
                );
            }
            Ok(0)
        }
        Command::Operator { command: OperatorCommand::Revoke { name } } => {
            if store.revoke_operator(&name).await? {
                println!("operator {name} revoked; its console sessions are ended");
                Ok(0)
            } else {
                eprintln!("no live operator named {name:?}");
                Ok(1)
            }
        }
        Command::Token { command: TokenCommand::List { tenant } } => {
            println!("{:<36} {:<14} {:<24} {:<24} revoked", "id", "prefix", "created", "last used");
            for t in store.list_tokens(&tenant).await.map_err(no_tenant(&tenant, &database_url))? {
                println!(
                    "{:<36} {:<14} {:<24} {:<24} {}",
                    t.id,
                    t.prefix,
                    t.created_at,
                    t.last_used_at.as_deref().unwrap_or("never"),
                    t.revoked_at.as_deref().unwrap_or("no")
                );
            }
            Ok(0)
        }
        Command::Token { command: TokenCommand::Revoke { tenant: slug, id } } => {
            let t = tenant(slug).await?;
            let live = store.list_tokens(&t.slug).await?.iter().any(|k| k.id == id && k.revoked_at.is_none());
            if live && store.revoke_tenant_token(t.id, &id, &cli_actor()).await? {
                println!("revoked token {id} of tenant {}", t.slug);
                Ok(0)
            } else {
                anyhow::bail!("tenant {} has no live token with id {id}", t.slug)
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
        Format::Text => {
            let color = COLOR.get().copied().unwrap_or(Color::Auto).on(std::io::stdout().is_terminal());
            print!("{}", report::text(p, color))
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&report::json(p)).unwrap_or_default()),
        Format::Html => println!("{}", report::html(p)),
    }
}

async fn serve(
    store: Store,
    database_url: &str,
    args: ServeArgs,
    webhook: Option<WebhookConfig>,
) -> anyhow::Result<()> {
    let signal = shutdown_signal();
    if args.bench_ceiling {
        let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        return serve_bench_ceiling(listener, signal).await;
    }
    let config = serve_config(database_url, &args, webhook)?;
    let app = App::with_store(store, config)?;
    // Reported before the main address (the last line of start-up).
    if let Some(maddr) = app.metrics_addr() {
        tracing::info!(metrics_addr = %maddr, "serving metrics (no auth) at http://{maddr}/metrics");
    }
    let store = app.store();
    if store.tenant_count().await? == 0 {
        store.create_tenant("default", Tier::Enterprise).await?;
        let (_, secret) = store.create_token("default").await?;
        println!("Created the Enterprise tenant `default` and its SCIM token (shown once; store it now):");
        println!();
        println!("    {secret}");
        println!();
        println!("Try it:");
        println!("    curl -s -H 'Authorization: Bearer {secret}' {}://{}{SCIM_BASE}/Users", app.scheme(), app.addr());
        println!();
    }
    let tls = app.scheme() == "https";
    tracing::info!(addr = %app.addr(), backend = ?store.backend(), tls, "serving SCIM at {}{SCIM_BASE}", app.origin());
    app.run_until_stopped(signal).await
}

/// `serve`'s flags, checked, as the app's configuration.
fn serve_config(database_url: &str, args: &ServeArgs, webhook: Option<WebhookConfig>) -> anyhow::Result<Config> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::http::serve::tls_config(cert, key)?),
        _ => None,
    };
    let public_url = args.public_url.as_deref().map(public_url).transpose()?;
    let trusted_proxies = args
        .trusted_proxy
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| trusted_proxy(p.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secs = |name: &str, v: f64| {
        anyhow::ensure!(v.is_finite() && (0.0..=3600.0).contains(&v), "{name} must be between 0 and 3600 seconds");
        Ok(std::time::Duration::from_secs_f64(v))
    };
    let shutdown_delay = secs("--shutdown-delay", args.shutdown_delay)?;
    let drain_timeout = secs("--drain-timeout", args.drain_timeout)?;
    let request_timeout = secs("--request-timeout", args.request_timeout)?;
    let header_timeout = secs("--header-timeout", args.header_timeout)?;
    anyhow::ensure!(
        request_timeout > std::time::Duration::ZERO && header_timeout > std::time::Duration::ZERO,
        "--request-timeout and --header-timeout must be more than 0"
    );
    let rate = match (std::num::NonZeroU32::new(args.rate_limit), std::num::NonZeroU32::new(args.rate_burst)) {
        (None, _) => None,
        (Some(r), Some(b)) => Some((r, b)),
        (Some(_), None) => {
            anyhow::bail!("--rate-burst must be at least 1 (or switch the limit off with --rate-limit 0)")
        }
    };
    let files = crate::http::serve::raise_open_file_limit();
    // Each connection is a descriptor; the database pool, the WAL, the log and the listener need
    // some too: keep 128 for them.
    let max_connections = match (args.max_connections, files) {
        (Some(n), _) => n.max(1),
        (None, Some(f)) => usize::try_from(f.saturating_sub(128).clamp(64, 1 << 20)).unwrap_or(1 << 20),
        (None, None) => 4096,
    };
    tracing::info!(max_connections, open_file_limit = files, "connection cap (more wait in the listen backlog)");
    Ok(Config {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        admin_token: secret(args.admin_token.clone(), "MOONBORN_ADMIN_TOKEN")?,
        metrics_token: secret(args.metrics_token.clone(), "MOONBORN_METRICS_TOKEN")?,
        http: crate::http::HttpOptions { public_url, trusted_proxies, request_timeout, rate },
        tls,
        max_connections,
        header_timeout,
        controller_workers: args.controller_workers.max(1),
        drift_repair_schedule: parse_schedule(&args.drift_repair_schedule).map_err(anyhow::Error::msg)?,
        purge_schedule: parse_schedule(&args.purge_schedule).map_err(anyhow::Error::msg)?,
        webhook,
        shutdown_delay,
        drain_timeout,
        ..Config::new(database_url)
    })
}

/// `--public-url`: an absolute http(s) URL without path, query or fragment; kept without its
/// trailing slash.
fn public_url(url: &str) -> anyhow::Result<String> {
    let u = url.trim_end_matches('/');
    let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
    anyhow::ensure!(
        matches!(scheme, "https" | "http")
            && !rest.is_empty()
            && !rest.contains(['/', '?', '#', ' '])
            && rest.parse::<axum::http::uri::Authority>().is_ok(),
        "--public-url {url:?} must be like https://scim.example.com (scheme and host, optional port, no path)"
    );
    Ok(u.to_string())
}

/// A `--trusted-proxy` entry: a CIDR (`10.0.0.0/8`) or one address.
fn trusted_proxy(p: &str) -> anyhow::Result<ipnet::IpNet> {
    p.parse::<ipnet::IpNet>()
        .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| anyhow::anyhow!("--trusted-proxy {p:?} is neither a CIDR (10.0.0.0/8) nor an IP address"))
}

/// `serve --bench-ceiling` (moonborn-bench's HTTP ceiling): the same axum stack answering
/// `GET /Users/{id}` with a fixed SCIM user body of the usual size, without touching the database.
async fn serve_bench_ceiling(
    listener: TcpListener,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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
    axum::serve(listener, app).with_graceful_shutdown(signal).await?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// the future is first polled: a signal that comes right after start-up is not lost (it would
/// otherwise kill the process without the drain).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
            tracing::info!("shutting down");
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}

/// How the audit trail names a person acting through the CLI: `cli:$USER`.
fn cli_actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}
