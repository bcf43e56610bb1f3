//! `moonborn-bench`: starts the real `moonborn-scim` release binary against a fresh database,
//! seeds it, loads it with its own keep-alive HTTP client, and reports every figure next to a
//! ceiling measured in the same run (HTTP: a trivial handler on the same axum stack; storage: raw
//! sqlx on the same kind of database). It asserts nothing about speed; it fails only on errors.
//!
//! ```text
//! cargo build --release -p moonborn-scim --bins && cargo run --release -p moonborn-bench -- --quick
//! ```

mod client;
mod db;
mod disk;
mod scenarios;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde_json::{json, Map, Value};

/// Benchmarks moonborn-scim against its own ceilings.
#[derive(Debug, Parser, Clone)]
#[command(name = "moonborn-bench")]
pub struct Args {
    /// Small sizes (10,000 users; well under 60 s): the CI smoke run. The default.
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// The issue's sizes (1,000,000 users, 100,000-member group, 100,000-user initial sync).
    #[arg(long)]
    pub full: bool,
    /// Override the seeded tenant's user count (the other sizes scale down with it when smaller).
    #[arg(long)]
    pub size: Option<usize>,
    /// Database server: postgres://…/db creates a fresh database on it (dropped afterwards);
    /// default: a temporary SQLite file.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Write one JSON object per scenario (a JSON array) to FILE.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Concurrent clients of the closed-loop scenarios.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Run only these scenarios (get-user, filter-username, post-user, bulk-create, patch-member,
    /// initial-sync, paced-sync, push-applied, drift-repair); ceilings and RSS are always
    /// measured.
    #[arg(long, num_args = 1..)]
    pub scenario: Vec<String>,
}

/// One line of the report.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub name: String,
    pub ops_per_sec: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub ceiling_ops_per_sec: Option<f64>,
    pub ratio_to_ceiling: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
    pub params: Map<String, Value>,
}

impl Row {
    pub fn new(name: &str, target: &str) -> Row {
        Row { name: name.into(), target: target.into(), ..Row::default() }
    }
    pub fn param(mut self, k: &str, v: impl Into<Value>) -> Row {
        self.params.insert(k.into(), v.into());
        self
    }
    fn json(&self) -> Value {
        let r = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
        let mut o = Map::new();
        o.insert("name".into(), json!(self.name));
        o.insert("ops_per_sec".into(), json!(r(self.ops_per_sec)));
        o.insert("p50_ms".into(), json!(r(self.p50_ms)));
        o.insert("p99_ms".into(), json!(r(self.p99_ms)));
        o.insert("ceiling_ops_per_sec".into(), json!(r(self.ceiling_ops_per_sec)));
        o.insert("ratio_to_ceiling".into(), json!(r(self.ratio_to_ceiling)));
        o.insert("peak_rss_mb".into(), json!(r(self.peak_rss_mb)));
        o.insert("target".into(), json!(self.target));
        o.insert("target_met".into(), json!(self.met));
        o.insert("parameters".into(), Value::Object(self.params.clone()));
        Value::Object(o)
    }
}

fn fmt(v: Option<f64>, prec: usize) -> String {
    match v {
        None => "-".into(),
        Some(x) if x >= 1000.0 && prec > 0 => format!("{x:.0}"),
        Some(x) => format!("{x:.prec$}"),
    }
}

/// Prints the table (markdown); `--json` writes the same rows for docs/bench/.
pub fn print_table(rows: &[Row]) {
    println!();
    println!("| scenario | ops/s | p50 ms | p99 ms | ceiling ops/s | ratio | peak RSS MB | target | met? |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            fmt(r.ops_per_sec, 0),
            fmt(r.p50_ms, 2),
            fmt(r.p99_ms, 2),
            fmt(r.ceiling_ops_per_sec, 0),
            fmt(r.ratio_to_ceiling, 2),
            fmt(r.peak_rss_mb, 1),
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            }
        );
    }
    println!();
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let mut env = match scenarios::Env::prepare(&args).await {
            Ok(env) => env,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let result = tokio::select! {
            r = scenarios::run(&mut env, &args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        // Servers are killed by their guards (dropped with the run); the database goes here.
        env.cleanup().await;
        match result {
            Ok(rows) => {
                let errors = env.errors.count();
                if let Some(path) = &args.json {
                    let doc = Value::Array(rows.iter().map(Row::json).collect());
                    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
                    if let Err(e) = std::fs::write(path, text + "\n") {
                        eprintln!("error: writing {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                    println!("wrote {}", path.display());
                }
                if errors > 0 {
                    eprintln!();
                    eprintln!("ERRORS: {errors} failed requests (non-2xx or transport); first ones:");
                    for s in env.errors.samples() {
                        eprintln!("  {s}");
                    }
                    return ExitCode::FAILURE;
                }
                println!("no errors");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                if env.errors.count() > 0 {
                    eprintln!("ERRORS: {} failed requests; first ones:", env.errors.count());
                    for s in env.errors.samples() {
                        eprintln!("  {s}");
                    }
                }
                ExitCode::FAILURE
            }
        }
    })
}
