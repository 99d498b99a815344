//! A real browser for the console's tests: Debian's headless Chromium, driven over
//! WebDriver (its `chromedriver`) with fantoccini. A missing browser fails the test and
//! says how to get it; screenshots are kept under `target/console-screenshots/`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use testkit::free_port;

/// Where Debian's `chromium` package puts the browser (`GEOSAGA_CHROMIUM` overrides).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts its WebDriver (`GEOSAGA_CHROMEDRIVER`
/// overrides).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a page has to show what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The arguments Chromium runs with: headless, no sandbox (tests may run as root), and
/// nothing that reaches the network by itself.
const ARGS: &[&str] = &[
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

fn tool(variable: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: the console's browser tests need Debian's `{package}` package \
         (`apt-get install chromium chromium-driver`; scripts/test installs it), or set {variable}",
        path.display()
    );
    path
}

/// Where screenshots go.
pub fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}

/// One Chromium, with its chromedriver, for one test.
pub struct Browser {
    driver: Child,
    client: Client,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a Chromium session `width` pixels wide.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium = tool("GEOSAGA_CHROMIUM", CHROMIUM, "chromium");
        let chromedriver = tool("GEOSAGA_CHROMEDRIVER", CHROMEDRIVER, "chromium-driver");
        let port = free_port();
        // Its own process group, so that dropping the browser ends Chromium too.
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", chromedriver.display()));
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while reqwest::get(format!("{url}/status")).await.is_err() {
            assert!(start.elapsed() < PATIENCE, "chromedriver does not answer on {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args: Vec<String> = ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--window-size={width},{height}"));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no Chromium session from {}: {e}", chromedriver.display()));
        Browser { driver, client }
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    }

    /// The page's URL.
    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// The first element `css` selects, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
    }

    /// Waits until the text of the element `css` selects contains `needle`; returns it.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            if start.elapsed() > PATIENCE {
                let source = self.client.source().await.unwrap_or_default();
                panic!(
                    "`{css}` never showed {needle:?} on {}; it shows {text:?}\n{source}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.unwrap()
    }

    /// Clicks the first element `css` selects.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    /// Saves a screenshot of the whole page as `target/console-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let (width, _) = self.client.get_window_size().await.unwrap();
        let height = self
            .eval("return document.documentElement.scrollHeight;")
            .await
            .as_u64()
            .unwrap_or(900);
        let width = u32::try_from(width).unwrap();
        let _ = self
            .client
            .set_window_size(width, u32::try_from(height.clamp(400, 6000)).unwrap())
            .await;
        let png = self.client.screenshot().await.unwrap();
        let path = artifacts().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session and the browser.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started share the group it leads.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
