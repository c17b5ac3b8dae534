//! A real headless browser for the tests of pages the project writes: Debian's `chromium`
//! (e2e/install-prerequisites.sh installs it). Runs it as a child process to dump a page's
//! DOM after its scripts ran, or to take a screenshot. Does process and file I/O.
//!
//! The browser is kept off the network: every request it makes goes to a proxy address
//! on 127.0.0.1 where nothing listens, and its background services are switched off, so a
//! page that tried to fetch something would fail (and show it) instead of reaching out.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The `chromium` binary on PATH, or an error saying how to install it.
pub fn chromium() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("chromium");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "chromium not found on PATH: this test needs a real headless Chromium. Install \
         Debian's package (`apt-get install chromium`; e2e/install-prerequisites.sh does it)"
    )
}

/// Flags for a headless, offline, throwaway browser; `profile` is its user-data dir.
fn headless(profile: &Path) -> Vec<String> {
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--no-pings",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

fn run(args: Vec<String>, what: &str) -> Result<Vec<u8>> {
    let browser = chromium()?;
    let output = Command::new(&browser)
        .args(&args)
        .output()
        .with_context(|| format!("starting {}", browser.display()))?;
    if !output.status.success() {
        bail!(
            "{what}: chromium exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}

/// `file://` URL of a local file.
pub fn file_url(path: &Path) -> Result<String> {
    let absolute = std::fs::canonicalize(path).with_context(|| path.display().to_string())?;
    Ok(format!("file://{}", absolute.display()))
}

/// The DOM of `url` after its scripts ran (`--dump-dom`).
pub fn dump_dom(url: &str) -> Result<String> {
    let profile = tempfile::tempdir()?;
    let mut args = headless(profile.path());
    args.extend(["--dump-dom".to_string(), url.to_string()]);
    let stdout = run(args, &format!("dumping the DOM of {url}"))?;
    Ok(String::from_utf8(stdout)?)
}

/// A PNG screenshot of `url` at `width` x `height` CSS pixels, written to `png`.
pub fn screenshot(url: &str, png: &Path, width: u32, height: u32) -> Result<()> {
    let profile = tempfile::tempdir()?;
    if let Some(parent) = png.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut args = headless(profile.path());
    args.extend([
        format!("--screenshot={}", png.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".to_string(),
        url.to_string(),
    ]);
    run(args, &format!("a screenshot of {url}"))?;
    let bytes = std::fs::read(png).with_context(|| png.display().to_string())?;
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        bail!("{} is not a PNG", png.display());
    }
    Ok(())
}
