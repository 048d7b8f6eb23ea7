//! The run report in a real headless browser (Chromium, from Debian's `chromium` package;
//! `.ci/run` installs it): the page renders, every section is there with its figures and
//! charts, and nothing it shows comes from elsewhere.

use std::path::Path;
use std::process::Command;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Renders `report` headless: the DOM after rendering has every section, two charts, the
/// figures, no external resource; a screenshot of it is a real image.
pub fn renders_in_a_browser(report: &Path) {
    let Some(browser) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "CI needs Chromium for the report test (apt-get install chromium)");
        eprintln!("note: no Chromium here (apt-get install chromium); the report's browser check did not run");
        return;
    };
    let url = format!("file://{}", report.display());
    let profile = tempfile::tempdir().expect("profile");
    let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1200,3000"];
    let user = format!("--user-data-dir={}", profile.path().display());
    let dom = Command::new(browser).args(flags).arg(&user).arg("--dump-dom").arg(&url).output().expect("run chromium");
    assert!(dom.status.success(), "chromium failed: {}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in medtune::report::SECTIONS {
        assert!(dom.contains(&format!("id=\"{id}\"")), "the rendered report lacks section {id}");
    }
    assert!(dom.matches("<svg").count() >= 2, "the rendered report lacks its charts");
    assert!(dom.contains("<polyline"), "the loss chart has no line");
    assert!(dom.contains("<mark class=\"concept\">"), "no example shows what the normalizer found");
    assert!(!dom.contains("src=\"http") && !dom.contains("href=\"http"), "the report loads something from elsewhere");
    let shot = profile.path().join("report.png");
    let out = Command::new(browser)
        .args(flags)
        .arg(&user)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium screenshot failed: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 50_000, "the screenshot is {} bytes: the page did not render", png.len());
}
