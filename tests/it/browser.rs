//! The dashboard in a real browser: headless Chromium, driven over
//! WebDriver, against `cutover demo`'s setup (the built-in blue v1 and
//! green v2 upstreams behind the demo config), and a page of another
//! origin that tries to switch through the operator's browser.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::browser::Browser;
use crate::support::*;

/// The bound of one browser test: Chromium takes seconds to start.
const BROWSER_BOUND: Duration = Duration::from_secs(90);

/// `cutover demo`'s upstreams and config, in-process on loopback ports.
async fn demo() -> Cutover {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let blue = cutover::demo::start_upstream(any, "blue", "v1")
        .await
        .unwrap();
    let green = cutover::demo::start_upstream(any, "green", "v2")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = cutover::demo::config_text(any, any, blue, green, dir.path());
    Cutover::start_in(dir, &text).await
}

/// Which pool answers the next request through the proxy.
async fn served_by(proxy: &Cutover) -> String {
    let reply = fetch(proxy.addr, "/").await;
    reply.json()["pool"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Clicks `action`'s button of the demo service, then the dialog's
/// Confirm.
async fn act(browser: &Browser, action: &str) {
    browser
        .click(&format!("[data-service=demo] [data-action={action}]"))
        .await;
    browser.find("#confirm[open]").await;
    browser.click("#confirm-ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_switches_the_demo_to_green_and_back_through_its_buttons() {
    within(BROWSER_BOUND, async {
        let Some(browser) = Browser::start(1280, 1100).await else {
            return;
        };
        let proxy = demo().await;
        let admin = proxy.admin;
        browser
            .client
            .goto(&format!("http://{admin}/"))
            .await
            .expect("open the dashboard");

        // The demo service, both pools and both versions.
        let pool = |p: &str| format!("[data-service=demo] [data-pool={p}]");
        let version = |p: &str| format!("{} td.version", pool(p));
        browser
            .text_until(&version("blue"), "v1", |t| t == "v1")
            .await;
        browser
            .text_until(&version("green"), "v2", |t| t == "v2")
            .await;
        let active = "[data-service=demo] .active-pool";
        browser.text_until(active, "blue", |t| t == "blue").await;
        browser.text_until("#conn", "live", |t| t == "live").await;

        // The charts follow the load.
        for _ in 0..40 {
            assert_eq!(served_by(&proxy).await, "blue");
        }
        let rps = format!("{} .chart .value", pool("blue"));
        browser
            .text_until(&rps, "a rate above 0", |t| {
                t.trim_end_matches("/s")
                    .parse::<f64>()
                    .is_ok_and(|r| r > 0.0)
            })
            .await;

        // A refused switch shows why, and changes nothing.
        let expect = browser
            .find("[data-service=demo] [data-field=expect]")
            .await;
        expect.clear().await.unwrap();
        expect.send_keys("v9").await.unwrap();
        act(&browser, "switch").await;
        browser
            .text_until("#confirm-error", "the refusal", |t| {
                t.contains("version_mismatch")
            })
            .await;
        browser.click("#confirm-cancel").await;
        assert_eq!(served_by(&proxy).await, "blue");

        // The switch with the right version reaches the proxy.
        expect.clear().await.unwrap();
        expect.send_keys("v2").await.unwrap();
        act(&browser, "switch").await;
        browser.text_until(active, "green", |t| t == "green").await;
        assert_eq!(served_by(&proxy).await, "green", "the next request");
        let events = proxy.events("demo").await;
        assert_eq!(events.last().unwrap()["reason"], "manual");
        assert_eq!(events.last().unwrap()["actor"], "api");
        browser
            .text_until("#events li", "the switch's event", |t| t.contains("manual"))
            .await;
        browser.screenshot("demo-switched-to-green").await;

        act(&browser, "rollback").await;
        browser.text_until(active, "blue", |t| t == "blue").await;
        assert_eq!(served_by(&proxy).await, "blue");
        assert_eq!(
            proxy.events("demo").await.last().unwrap()["reason"],
            "rollback"
        );

        browser.close().await;
        proxy.stop().await;
    })
    .await;
}

/// Serves `html` to every request on a loopback port of its own: a page
/// of another origin.
async fn serve_page(html: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_post_from_the_operators_browser_changes_nothing() {
    within(BROWSER_BOUND, async {
        let Some(browser) = Browser::start(1024, 768).await else {
            return;
        };
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let admin = proxy.admin;
        // The operator has the dashboard open: the browser holds a session
        // cookie for this host.
        browser
            .client
            .goto(&format!("http://{admin}/ui/"))
            .await
            .unwrap();
        browser.text_until("#conn", "live", |t| t == "live").await;

        // Another port of the same host (same site: the cookie goes along)
        // posts a form to the switch, as text/plain JSON.
        let target = format!("http://{admin}/api/v1/services/app/switch");
        let page = serve_page(format!(
            "<form method=post enctype=text/plain action=\"{target}\">\
             <input type=hidden name='{{\"to\": \"green\", \"x\": \"' value='\"}}'></form>\
             <script>document.forms[0].submit()</script>"
        ))
        .await;
        browser
            .client
            .goto(&format!("http://{page}/"))
            .await
            .unwrap();
        browser
            .text_until("body", "the proxy's refusal", |t| t.contains("forbidden"))
            .await;
        let url = browser.client.current_url().await.unwrap();
        assert_eq!(url.as_str(), target, "the form was posted");

        assert_eq!(proxy.service("app").await["active"], "blue");
        assert!(proxy.events("app").await.is_empty());
        browser.close().await;
        proxy.stop().await;
    })
    .await;
}
