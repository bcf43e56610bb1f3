//! Webhooks over HTTPS, driven as an operator would: the real binary started with `--ca-file`
//! naming a CA made by the test, delivering to an HTTPS receiver on loopback whose certificate
//! that CA signed. Each delivery is checked with the Standard Webhooks reference implementation
//! (the `standardwebhooks` crate), for every secret of a rotation.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use moonborn_scim::outbox;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};
use tokio_rustls::rustls;

const BIN: &str = env!("CARGO_BIN_EXE_moonborn-scim");
/// The old and the new secret of a rotation.
const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/v1Ze+g9tXU=";
const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A CA and a server certificate for `localhost` and 127.0.0.1 that it signed.
struct Pki {
    ca_pem: String,
    server: rustls::ServerConfig,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "moonborn-scim test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    // The process-wide provider: ring, the only one built in (no aws-lc).
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server config");
    Pki { ca_pem: ca_cert.pem(), server }
}

/// A TLS listener for `axum::serve`: handshakes that fail are dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn hook(State(got): State<Got>, headers: HeaderMap, body: Bytes) -> StatusCode {
    got.lock().expect("lock").push((headers, body));
    StatusCode::NO_CONTENT
}

/// An HTTPS receiver on loopback; its port.
async fn https_receiver(server: rustls::ServerConfig, got: Got) -> u16 {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)) };
    let app = Router::new().route("/hooks/moonborn", post(hook)).with_state(got);
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    port
}

/// A `serve` child; killed when dropped.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` on an empty database with `args`; the process, its SCIM base URL and the token
/// of the `default` tenant.
fn start(db: &str, global: &[&str], args: &[&str]) -> (Served, String, String) {
    let mut child = Command::new(BIN)
        .args(global)
        .args(["--database-url", db, "serve", "--listen", "127.0.0.1:0", "--shutdown-delay", "0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("MOONBORN_WEBHOOK_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let served = Served(child);
    let mut token = None;
    let mut lines = stdout.lines().map_while(Result::ok);
    for l in lines.by_ref() {
        if l.trim().starts_with("mbscim_") {
            token = Some(l.trim().to_string());
        }
        if l.trim().starts_with("curl") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let mut base = None;
    let mut err_lines = stderr.lines().map_while(Result::ok);
    for l in err_lines.by_ref() {
        if let Some(i) = l.find("serving SCIM at ") {
            base = l[i + "serving SCIM at ".len()..].split_whitespace().next().map(str::to_string);
            break;
        }
    }
    // Keep draining the log (the server must never block on a full pipe); show it on failure.
    std::thread::spawn(move || err_lines.for_each(|l| eprintln!("serve: {l}")));
    (served, base.expect("serve reports its address"), token.expect("serve prints the default tenant's token"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_signed_for_every_secret_is_delivered_with_the_ca_file() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).expect("write CA");
    let got = Got::default();
    let port = https_receiver(pki.server, got.clone()).await;
    let url = format!("https://localhost:{port}/hooks/moonborn");

    // Without the CA the receiver's certificate is not trusted: no delivery.
    let err = outbox::client(&[]).expect("client").post(&url).body("{}").send().await.expect_err("untrusted");
    let mut chain = err.to_string();
    let mut src = std::error::Error::source(&err);
    while let Some(s) = src {
        chain.push_str(&format!(": {s}"));
        src = s.source();
    }
    assert!(chain.contains("UnknownIssuer") || chain.contains("certificate"), "{chain}");

    let db = format!("sqlite://{}", dir.path().join("tls.db").display());
    let ca = ca_file.to_str().expect("path");
    let secrets = format!("{OLD}, {NEW}");
    let (_served, base, token) = start(&db, &["--ca-file", ca], &["--webhook-url", &url, "--webhook-secret", &secrets]);

    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/Users"))
        .bearer_auth(&token)
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "tls@acme.com", "active": true
        }))
        .send()
        .await
        .expect("POST /Users");
    assert_eq!(res.status(), 201);

    let deadline = Instant::now() + Duration::from_secs(30);
    let (headers, body) = loop {
        if let Some(first) = got.lock().expect("lock").first().cloned() {
            break first;
        }
        assert!(Instant::now() < deadline, "no delivery over HTTPS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let event: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(event["type"], "user.provisioned");
    assert_eq!(headers["webhook-id"].to_str().expect("id"), event["id"].as_str().expect("id"));
    assert!(headers.contains_key("idempotency-key"));
    let sigs: Vec<&str> = headers["webhook-signature"].to_str().expect("signature").split(' ').collect();
    assert_eq!(sigs.len(), 2, "one signature per secret: {sigs:?}");
    // Either secret verifies it (a receiver may hold the old one or the new one); another does not.
    for secret in [OLD, NEW] {
        standardwebhooks::Webhook::new(secret)
            .expect("secret")
            .verify(&body, &headers)
            .unwrap_or_else(|e| panic!("does not verify with {secret}: {e}"));
    }
    let other = standardwebhooks::Webhook::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("secret");
    assert!(other.verify(&body, &headers).is_err());
    let ts: i64 = headers["webhook-timestamp"].to_str().expect("timestamp").parse().expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 120, "{ts}");
}
