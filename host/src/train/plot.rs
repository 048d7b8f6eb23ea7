//! A self-contained SVG line chart: training loss per step on the left axis, evaluation
//! accuracy on the right (0 to 1). Used for `runs/<name>/loss.svg` and the report.

use std::fmt::Write as _;

const W: f64 = 640.0;
const H: f64 = 320.0;
const PAD: f64 = 48.0;

/// The chart of `loss` (step, value) and `accuracy` (step, value in 0..1).
pub fn loss_chart(title: &str, loss: &[(usize, f64)], accuracy: &[(usize, f64)]) -> String {
    let max_step = loss.iter().chain(accuracy).map(|(s, _)| *s).max().unwrap_or(1).max(1) as f64;
    let finite = loss.iter().map(|(_, l)| *l).filter(|l| l.is_finite());
    let max_loss = finite.clone().fold(0.0f64, f64::max).max(1e-9) * 1.05;
    let x = |s: usize| PAD + (s as f64 / max_step) * (W - 2.0 * PAD);
    let y = |v: f64, top: f64| H - PAD - (v / top).clamp(0.0, 1.0) * (H - 2.0 * PAD);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="12" role="img" aria-label="{}">"##,
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<rect width="{W}" height="{H}" fill="#fff"/><text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"##,
        W / 2.0,
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="#444"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{}" stroke="#444"/>"##,
        H - PAD,
        W - PAD,
        H - PAD,
        H - PAD
    );
    for i in 0..=4 {
        let v = max_loss * f64::from(i) / 4.0;
        let _ = write!(svg, r##"<text x="{}" y="{}" text-anchor="end" fill="#1f77b4">{v:.2}</text>"##, PAD - 4.0, y(v, max_loss) + 4.0);
        let a = f64::from(i) / 4.0;
        let _ = write!(svg, r##"<text x="{}" y="{}" fill="#d62728">{a:.2}</text>"##, W - PAD + 4.0, y(a, 1.0) + 4.0);
    }
    let _ = write!(svg, r##"<text x="{}" y="{}" text-anchor="middle">step (of {max_step})</text>"##, W / 2.0, H - 12.0);
    let _ = write!(
        svg,
        r##"<text x="{PAD}" y="{}" fill="#1f77b4">loss</text><text x="{}" y="{}" text-anchor="end" fill="#d62728">eval accuracy</text>"##,
        PAD - 8.0,
        W - PAD,
        PAD - 8.0
    );
    let points: Vec<String> =
        loss.iter().filter(|(_, l)| l.is_finite()).map(|(s, l)| format!("{:.1},{:.1}", x(*s), y(*l, max_loss))).collect();
    if !points.is_empty() {
        let _ = write!(svg, r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##, points.join(" "));
    }
    let acc: Vec<String> = accuracy.iter().map(|(s, a)| format!("{:.1},{:.1}", x(*s), y(*a, 1.0))).collect();
    if !acc.is_empty() {
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="#d62728" stroke-width="1.5" stroke-dasharray="4 3" points="{}"/>"##,
            acc.join(" ")
        );
        for (s, a) in accuracy {
            let _ = write!(svg, r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#d62728"/>"##, x(*s), y(*a, 1.0));
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Escapes text for XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
