//! Real headless Chromium through chromedriver (Debian's `chromium` and
//! `chromium-driver`), with helpers split into locating, acting and checking.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use tempfile::TempDir;

/// How long a locator waits for the dashboard to render what it looks for.
const WAIT: Duration = Duration::from_secs(15);

/// A browser session on a fresh profile; its chromedriver and Chromium die with it.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver client, for anything the helpers below do not cover.
    pub client: Client,
    base_url: String,
    /// Taken when killed: its id may be reused once it has been waited for.
    driver: Option<Child>,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session
    /// that resolves paths against `base_url`.
    pub async fn start(base_url: &str) -> Self {
        let chromedriver =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start {chromedriver} ({err}); scripts/install-tools installs it")
            });
        let profile = tempfile::tempdir().expect("profile dir");
        let chromium =
            std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/lib/chromium/chromium".into());
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        let mut last_error = String::new();
        // chromedriver gives no signal when it has bound its port: retry the session
        // request until it answers, within a bound.
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
            {
                Ok(client) => {
                    return Self {
                        client,
                        base_url: base_url.trim_end_matches('/').to_owned(),
                        driver: Some(driver),
                        _profile: profile,
                    };
                }
                Err(err) => last_error = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no WebDriver session from {chromedriver}: {last_error}");
    }

    // ---- locate ----

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no element {css:?} within {WAIT:?}: {err}"))
    }

    /// Waits until the element matching `css` shows `text` (a substring) and returns its
    /// whole text.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> String {
        self.wait_for_text_within(css, text, WAIT).await
    }

    /// [`Browser::wait_for_text`] with a wait of its own.
    pub async fn wait_for_text_within(&self, css: &str, text: &str, wait: Duration) -> String {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = String::new();
        while tokio::time::Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                seen = element.text().await.unwrap_or_default();
                if seen.contains(text) {
                    return seen;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{css:?} never showed {text:?}; last seen {seen:?}");
    }

    // ---- act ----

    /// Opens `path` on the server.
    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base_url);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|err| panic!("cannot open {url}: {err}"));
    }

    /// Replaces the value of the input matching `css`.
    pub async fn fill(&self, css: &str, value: &str) {
        let input = self.find(css).await;
        input.clear().await.expect("clear input");
        input.send_keys(value).await.expect("type into input");
    }

    /// Clicks the element matching `css`. A live list may redraw the element between the
    /// find and the click (a VM row when a dirty-rate reading arrives): then it is found
    /// again, a few times.
    pub async fn click(&self, css: &str) {
        for _ in 0..4 {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(err) if err.to_string().contains("stale element") => {}
                Err(err) => panic!("cannot click {css:?}: {err}"),
            }
        }
        panic!("cannot click {css:?}: it went stale four times");
    }

    /// Fires a window `focus` event, as when the user comes back to the tab.
    pub async fn refocus(&self) {
        self.client
            .execute("window.dispatchEvent(new Event('focus'));", vec![])
            .await
            .expect("dispatch focus");
    }

    // ---- check ----

    /// The path part of the current address.
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current url")
            .path()
            .to_owned()
    }

    /// Waits until the address bar shows `path`.
    pub async fn wait_for_path(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = String::new();
        while tokio::time::Instant::now() < deadline {
            seen = self.path().await;
            if seen == path {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("path never became {path:?}; it is {seen:?}");
    }

    /// Saves a PNG of the page as `artifacts/screenshots/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = crate::artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        path
    }

    /// The processes chromedriver runs (Chromium and its helpers).
    pub fn browser_pids(&self) -> Vec<u32> {
        self.driver
            .as_ref()
            .map_or_else(Vec::new, |d| descendants(d.id()))
    }

    /// Ends the WebDriver session, chromedriver and Chromium.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.kill();
    }

    /// Kills chromedriver and every process under it (Chromium and its helpers): killing
    /// chromedriver alone would leave Chromium running after a failed test. (They stay in
    /// the terminal's process group, so a Ctrl-C still reaches them too.)
    fn kill(&mut self) {
        let Some(mut driver) = self.driver.take() else {
            return;
        };
        let pids: Vec<String> = descendants(driver.id())
            .iter()
            .map(u32::to_string)
            .collect();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .stderr(Stdio::null())
                .status();
        }
        let _ = driver.kill();
        let _ = driver.wait();
    }
}

/// Every process below `root`, from the parent ids in `/proc/<pid>/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (name) state ppid …"; the name may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while let Some(&parent) = found.get(i) {
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.split_off(1)
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After `close` there is nothing left to kill; after a failed assertion this
        // stops chromedriver and its Chromium.
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
