//! Headless Debian chromium for the end-to-end tests, driven over WebDriver (fantoccini, plain
//! HTTP to a local `chromedriver`).
//!
//! How to use it: plain `#[test]` functions, like every other end-to-end test here. A `Browser`
//! owns a small tokio runtime and blocks on it, so its methods are ordinary synchronous calls
//! that fit between the `ureq` calls of a test:
//!
//! ```ignore
//! let browser = Browser::start();                 // 1280x900; Browser::start_mobile() is 390x844
//! browser.goto(&format!("{}/portal/login", server.base));
//! browser.fill("input[name=user]", "alice");
//! browser.submit("form#login");
//! browser.wait_for("nav");                        // bounded by WAIT_TIMEOUT
//! assert_eq!(browser.text_of("h1"), "Orders");
//! let png = browser.screenshot("platform-orders"); // $CARGO_TARGET_DIR/screenshots/platform-orders.png
//! ```
//!
//! Every call is bounded (`COMMAND_TIMEOUT`, `WAIT_TIMEOUT`) and a failure panics with what was
//! asked and the page's address, so a test never hangs on a browser. Each `Browser` has its own
//! `chromedriver` on a free port and its own temporary profile directory, so tests running at
//! once under cargo-nextest (one process per test) never share a port, a profile or a session.
//! Dropping it ends the session and kills the driver's process group and any chromium left on its
//! profile. Measured here (2 shared cores, two tests at once): the session starts in about 2 s,
//! a first page then takes 80-150 ms; `browser_smoke.rs` prints both.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

/// The longest one WebDriver command may take (a page load included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `wait_for` waits for an element to appear.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `chromedriver` may take to listen.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts at a free port (another process may take the one we picked before the driver binds it).
const DRIVER_START_ATTEMPTS: usize = 5;

/// The flags without which chromium hangs or phones home on this closed network, plus headless.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// The window a page is shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewport {
    /// 1280x900, the operators' portals.
    Desktop,
    /// 390x844, a phone: the members' H5 pages.
    Mobile,
}

impl Viewport {
    /// Width and height in CSS pixels.
    pub fn size(self) -> (u32, u32) {
        match self {
            Viewport::Desktop => (1280, 900),
            Viewport::Mobile => (390, 844),
        }
    }
}

/// One headless chromium session with its own driver and profile (see the module's doc).
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    profile: tempfile::TempDir,
}

impl Browser {
    /// A desktop-sized browser (1280x900).
    pub fn start() -> Browser {
        Browser::start_with(Viewport::Desktop)
    }

    /// A phone-sized browser (390x844, touch-less) for the members' H5 pages.
    pub fn start_mobile() -> Browser {
        Browser::start_with(Viewport::Mobile)
    }

    /// A browser with the given window.
    pub fn start_with(viewport: Viewport) -> Browser {
        let profile = tempfile::Builder::new().prefix("chromium-profile-").tempdir().expect("a temporary profile directory");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let (driver, port) = start_driver();
        let mut browser = Browser { runtime, client: None, driver, profile };
        let (width, height) = viewport.size();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| flag.to_string()).collect();
        args.push(format!("--user-data-dir={}", browser.profile.path().join("data").display()));
        args.push(format!("--window-size={width},{height}"));
        let mut options = serde_json::json!({"binary": "/usr/bin/chromium", "args": args});
        if viewport == Viewport::Mobile {
            // The window's size alone leaves a desktop device pixel ratio and user agent; pages
            // that ask "am I on a phone" read the metrics below.
            options["mobileEmulation"] = serde_json::json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}});
        }
        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let url = format!("http://127.0.0.1:{port}");
        let client = browser.bounded("start a chromium session", async {
            ClientBuilder::new(connector).capabilities(capabilities).connect(&url).await.map_err(|error| error.to_string())
        });
        browser.client = Some(client);
        browser.fit_viewport(width, height);
        browser
    }

    /// Sizes the window so that the page itself (the viewport, what screenshots show) is
    /// `width` x `height`: `--window-size` counts the browser's own frame too.
    fn fit_viewport(&self, width: u32, height: u32) {
        let inner = self.execute("return [window.innerWidth, window.innerHeight]");
        let (inner_width, inner_height) = (inner[0].as_u64().unwrap_or(0) as u32, inner[1].as_u64().unwrap_or(0) as u32);
        if (inner_width, inner_height) == (width, height) {
            return;
        }
        let (outer_width, outer_height) = self.bounded("read the window size", self.client().get_window_size());
        let frame = |outer: u64, inner: u32| (outer as u32).saturating_sub(inner);
        let (new_width, new_height) = (width + frame(outer_width, inner_width), height + frame(outer_height, inner_height));
        self.bounded("size the window", self.client().set_window_size(new_width, new_height));
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session (set in start_with)")
    }

    /// Runs one browser call within `COMMAND_TIMEOUT`, panicking with `what` on an error.
    fn bounded<T, E: std::fmt::Display>(&self, what: &str, call: impl std::future::Future<Output = Result<T, E>>) -> T {
        match self.runtime.block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, call).await }) {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => panic!("browser: {what}: {error}{}", self.where_now()),
            Err(_) => panic!("browser: {what}: no answer within {COMMAND_TIMEOUT:?}"),
        }
    }

    /// " (at URL)" for messages, or nothing when even that cannot be read.
    fn where_now(&self) -> String {
        let Some(client) = self.client.as_ref() else { return String::new() };
        match self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(2), client.current_url()).await }) {
            Ok(Ok(url)) => format!(" (at {url})"),
            _ => String::new(),
        }
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) {
        self.bounded(&format!("open {url}"), self.client().goto(url));
    }

    /// The address shown now (after redirects and form posts).
    pub fn current_url(&self) -> String {
        self.bounded("read the address", self.client().current_url()).to_string()
    }

    /// The page's title.
    pub fn title(&self) -> String {
        self.bounded("read the title", self.client().title())
    }

    /// The page's HTML as the browser holds it now.
    pub fn source(&self) -> String {
        self.bounded("read the page source", self.client().source())
    }

    /// The first element matching `css` (panics when there is none).
    pub fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.bounded(&format!("find {css}"), self.client().find(Locator::Css(css)))
    }

    /// Every element matching `css` (possibly none).
    pub fn find_all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.bounded(&format!("find all {css}"), self.client().find_all(Locator::Css(css)))
    }

    /// How many elements match `css` now.
    pub fn count(&self, css: &str) -> usize {
        self.find_all(css).len()
    }

    /// The visible text of the first element matching `css`.
    pub fn text_of(&self, css: &str) -> String {
        let element = self.find(css);
        self.bounded(&format!("read the text of {css}"), element.text())
    }

    /// The visible texts of every element matching `css`, in document order.
    pub fn texts_of(&self, css: &str) -> Vec<String> {
        self.find_all(css).iter().map(|element| self.bounded(&format!("read the text of {css}"), element.text())).collect()
    }

    /// An attribute of the first element matching `css` (`None` when it has none).
    pub fn attribute_of(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css);
        self.bounded(&format!("read {name} of {css}"), element.attr(name))
    }

    /// Replaces the value of the input matching `css` with `text`, typed as a user would.
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.bounded(&format!("clear {css}"), element.clear());
        self.bounded(&format!("type into {css}"), element.send_keys(text));
    }

    /// Picks the option with value `value` in the select matching `css`.
    pub fn select(&self, css: &str, value: &str) {
        let element = self.find(css);
        self.bounded(&format!("select {value} in {css}"), element.select_by_value(value));
    }

    /// Clicks the first element matching `css` (a navigation it starts is waited for).
    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.bounded(&format!("click {css}"), element.click());
    }

    /// Submits the form matching `css` as a user would: by clicking its first submit button
    /// (a `<button>` without a type is one), or, when it has none, with `requestSubmit()`, which
    /// runs the form's validation and submit handlers like a click does.
    pub fn submit(&self, form_css: &str) {
        let form = self.find(form_css);
        let buttons = self.bounded(
            &format!("find the submit button of {form_css}"),
            form.find_all(Locator::Css("button:not([type]), button[type=submit], input[type=submit]")),
        );
        match buttons.first() {
            Some(button) => self.bounded(&format!("submit {form_css}"), button.click()),
            None => {
                let form_json = serde_json::to_value(&form).expect("an element reference is JSON");
                self.bounded(&format!("submit {form_css}"), self.client().execute("arguments[0].requestSubmit()", vec![form_json]));
            }
        }
    }

    /// Runs JavaScript in the page and returns its result.
    pub fn execute(&self, script: &str) -> serde_json::Value {
        self.bounded("run a script", self.client().execute(script, Vec::new()))
    }

    /// Waits (at most `WAIT_TIMEOUT`) for an element matching `css` to exist. A look that a
    /// navigation cuts short ("aborted by navigation": a page that refreshes itself onward, as an
    /// H5 link's does) is tried again, as a look that finds nothing is.
    pub fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = std::time::Instant::now() + WAIT_TIMEOUT;
        loop {
            match self.runtime.block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, self.client().find(Locator::Css(css))).await }) {
                Ok(Ok(element)) => return element,
                Ok(Err(error)) => assert!(std::time::Instant::now() < deadline, "browser: wait for {css}: {error}{}", self.where_now()),
                Err(_) => panic!("browser: wait for {css}: no answer within {COMMAND_TIMEOUT:?}"),
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits (at most `WAIT_TIMEOUT`) until the text of the first element matching `css`
    /// contains `needle`; returns that text.
    pub fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT_TIMEOUT;
        loop {
            let elements = self.find_all(css);
            if let Some(element) = elements.first() {
                let text = self.bounded(&format!("read the text of {css}"), element.text());
                if text.contains(needle) {
                    return text;
                }
                assert!(std::time::Instant::now() < deadline, "browser: {css} never showed {needle:?}; it shows {text:?}{}", self.where_now());
            } else {
                assert!(std::time::Instant::now() < deadline, "browser: no {css} appeared{}", self.where_now());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits (at most `WAIT_TIMEOUT`) until the address contains `needle`; returns it.
    pub fn wait_for_url(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT_TIMEOUT;
        loop {
            let url = self.current_url();
            if url.contains(needle) {
                return url;
            }
            assert!(std::time::Instant::now() < deadline, "browser: the address never contained {needle:?}; it is {url}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The cookies the browser holds for the current page, as (name, value) pairs.
    pub fn cookies(&self) -> Vec<(String, String)> {
        let cookies = self.bounded("read the cookies", self.client().get_all_cookies());
        cookies.iter().map(|cookie| (cookie.name().to_string(), cookie.value().to_string())).collect()
    }

    /// The cookies with every attribute (path, flags, expiry) as the browser holds them.
    pub fn cookies_in_full(&self) -> Vec<fantoccini::cookies::Cookie<'static>> {
        self.bounded("read the cookies", self.client().get_all_cookies())
    }

    /// Forgets every cookie of the current site (a new visitor).
    pub fn delete_cookies(&self) {
        self.bounded("delete the cookies", self.client().delete_all_cookies());
    }

    /// Saves a PNG of the window as `<target dir>/screenshots/<name>.png` and returns its path.
    /// The target directory is `$CARGO_TARGET_DIR`, else the one the `clearing` binary was built
    /// in (`target/` when unset).
    pub fn screenshot(&self, name: &str) -> PathBuf {
        assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "a screenshot name is [A-Za-z0-9_-]+: {name:?}");
        let png = self.bounded(&format!("take screenshot {name}"), self.client().screenshot());
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "browser: screenshot {name} is not a PNG");
        let directory = screenshot_directory();
        std::fs::create_dir_all(&directory).unwrap_or_else(|error| panic!("create {}: {error}", directory.display()));
        let path = directory.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ending the session makes the driver close chromium; bounded, as a broken browser may not answer.
            let _ = self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), client.close()).await });
        }
        // The driver leads its own process group (see start_driver), so this reaches what it started.
        // SAFETY: a signal to a process group this Browser created.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
        kill_chromium_on(&self.profile.path().join("data"));
    }
}

/// Where screenshots go: `$CARGO_TARGET_DIR/screenshots`, else beside the built binary's profile.
pub fn screenshot_directory() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        // .../<target>/release/clearing: the target directory cargo built the tests in.
        _ => PathBuf::from(super::BINARY).parent().and_then(|profile| profile.parent()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target")),
    };
    target.join("screenshots")
}

/// Starts `chromedriver` on a free port, in a process group of its own; returns it and the port.
fn start_driver() -> (Child, u16) {
    let mut last_output = Vec::new();
    for _ in 0..DRIVER_START_ATTEMPTS {
        // Port 0 picks a free port; another process may take it before the driver binds it, and
        // then the driver exits at once ("port not available") and we try another.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver (Debian package chromium-driver; `make deps` installs it)");
        let (lines_out, lines_in) = std::sync::mpsc::channel();
        let stdout = driver.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_out.send(line).is_err() {
                    // Nobody waits any more: keep draining so the driver never blocks on a full pipe.
                    continue;
                }
            }
        });
        let deadline = std::time::Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines_in.recv_timeout(left) {
                Ok(line) if line.contains("started successfully") => return (driver, port),
                Ok(line) => last_output.push(line),
                // The driver exited (its stdout closed) or said nothing in time: try another port.
                Err(_) => break,
            }
        }
        // SAFETY: a signal to the process group just created.
        unsafe { libc::kill(-(driver.id() as i32), libc::SIGKILL) };
        let _ = driver.wait();
    }
    panic!("chromedriver did not start in {DRIVER_START_ATTEMPTS} attempts: {last_output:?}");
}

/// Kills any chromium process still running on `profile` (its `--user-data-dir`, unique to one
/// Browser): chromium may outlive a driver killed while the session was still open.
fn kill_chromium_on(profile: &std::path::Path) {
    let flag = format!("--user-data-dir={}", profile.display());
    let Ok(processes) = std::fs::read_dir("/proc") else { return };
    for process in processes.flatten() {
        let Some(pid) = process.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        let Ok(command_line) = std::fs::read(process.path().join("cmdline")) else { continue };
        if command_line.split(|byte| *byte == 0).any(|argument| argument == flag.as_bytes()) {
            // SAFETY: a signal to a chromium started for this Browser's own profile.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
