//! The operator console in a real headless Chromium (tests/common/browser.rs), served by the real
//! binary on a real SQLite file. Without Chromium and chromedriver each test says it is skipped on
//! stderr and passes, unless `MOONBORN_REQUIRE_BROWSER` is set (as `.ci/run` does): then it fails.

use common::browser::Browser;
use common::served::{db, Served};

mod common;

/// The harness itself: a plain page of the served binary, read and photographed in the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let Some(browser) = Browser::start().await else { return };
    let (_dir, db) = db();
    let served = Served::start(&db, None);
    let url = format!("http://{}/healthz", served.addr);

    browser.goto(&url).await;
    assert_eq!(browser.current_url().await, url);
    assert_eq!(browser.text("body").await.trim(), "ok");
    assert!(browser.page_source().await.contains(">ok<"), "{}", browser.page_source().await);
    assert!(browser.cookies().await.is_empty());

    browser.phone().await;
    let png = browser.screenshot("smoke").await;
    assert!(std::fs::read(&png).expect("read the screenshot").starts_with(b"\x89PNG\r\n\x1a\n"));
}
