//! The fleet page (`GET /`): the numbers of `/v1/fleet` as one
//! server-rendered HTML page for a laptop screen. No JavaScript, no
//! external assets (inline CSS only), every value from a report escaped;
//! the response also carries a Content-Security-Policy that forbids
//! scripts, so a missed escape could not run one.
//!
//! Per cohort: devices, silent devices, reports its devices lost, running
//! versions with a bar each, and the newest targets (on target, in
//! progress, tried, outcomes) with their success rate (colours at 95 % and
//! 80 %: the canary threshold and well below it); then the latest failures
//! with device, version, stage and reason. Bounded whatever the fleet's
//! size: the device list itself is only in the JSON.

use std::fmt::Write as _;

use manifest::Timestamp;

use crate::fleet::{CohortSummary, Fleet, TargetSummary};

/// Targets listed per cohort (newest versions); older ones are in the JSON.
const TARGETS_SHOWN: usize = 4;
/// Silent devices named per cohort (longest silent first).
const SILENT_SHOWN: usize = 12;

const CSS: &str = "
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1d2330;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif}
main{max-width:1240px;margin:0 auto;padding:20px 28px 32px}
header{display:flex;align-items:baseline;gap:16px;flex-wrap:wrap;margin-bottom:14px}
h1{font-size:22px;margin:0}
h2{font-size:17px;margin:0}
h3{font-size:12px;margin:0 0 6px;color:#5b6475;text-transform:uppercase;letter-spacing:.05em}
.meta{color:#5b6475}
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:14px 18px;margin-bottom:14px}
.head{display:flex;align-items:center;gap:10px;margin-bottom:10px}
.pill{display:inline-block;padding:1px 9px;border-radius:999px;background:#eef1f5;color:#3b4454;font-size:12px;font-weight:600}
.pill.warn{background:#fff4e0;color:#8a5300}
.pill.bad{background:#fde8e8;color:#a01e1e}
.pill.good{background:#e5f6ea;color:#1c6b34}
.cols{display:grid;grid-template-columns:minmax(300px,2fr) 3fr;gap:24px}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-size:12px;font-weight:600;color:#5b6475;border-bottom:1px solid #dde1e8;padding:3px 8px 3px 0}
td{padding:3px 8px 3px 0;border-bottom:1px solid #f0f2f5;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{height:10px;background:#eef1f5;border-radius:5px;min-width:90px;margin-top:5px}
.bar span{display:block;height:10px;border-radius:5px;background:#3d7be0}
.ok{color:#1c6b34;font-weight:600}.mid{color:#8a5300;font-weight:600}.low{color:#a01e1e;font-weight:600}
.silent{margin-top:8px;color:#5b6475;font-size:13px}
.silent b{color:#8a5300}
code{font:12px ui-monospace,'DejaVu Sans Mono',monospace}
.reason{max-width:520px;overflow-wrap:anywhere}
.muted{color:#8a93a3}
tr.idle td,tr.idle span{color:#8a93a3;font-weight:400}
footer{color:#8a93a3;font-size:12px;margin-top:6px}
";

/// Escape text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "5 min ago", "3 h ago", "2 d ago" relative to the summary's time.
fn ago(now: Timestamp, t: Timestamp) -> String {
    let secs = now.unix().saturating_sub(t.unix());
    match secs {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

fn when(now: Timestamp, t: Timestamp) -> String {
    format!("<span title=\"{t}\">{}</span>", ago(now, t))
}

/// `--silent-after` for people: "24 h", "90 min", "45 s".
fn span(secs: u64) -> String {
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn render(fleet: &Fleet) -> String {
    let now = fleet.generated_at;
    let devices: u64 = fleet.cohorts.iter().map(|c| c.devices).sum();
    let silent: u64 = fleet.cohorts.iter().map(|c| c.silent).sum();
    let mut h = String::with_capacity(16 * 1024);
    h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    h.push_str("<title>Fleet</title><style>");
    h.push_str(CSS);
    h.push_str("</style></head><body><main>\n<header><h1>Fleet</h1><span class=\"meta\">");
    let _ = write!(
        h,
        "{} in {} · {} (no report for more than {}) · {} · generated {now}",
        plural(devices, "device", "devices"),
        plural(fleet.cohorts.len() as u64, "cohort", "cohorts"),
        plural(silent, "silent", "silent"),
        span(fleet.silent_after_secs),
        plural(
            fleet.recent_failures.len() as u64,
            "recent failure",
            "recent failures"
        ),
    );
    h.push_str("</span></header>\n");
    if fleet.cohorts.is_empty() {
        h.push_str("<section class=\"card\"><p class=\"muted\">No device has reported yet.</p></section>\n");
    }
    for cohort in &fleet.cohorts {
        cohort_card(&mut h, fleet, cohort);
    }
    failures(&mut h, fleet);
    h.push_str(
        "<footer>The same numbers as JSON: <code>GET /v1/fleet</code>. \
         Definitions: docs/REPORTS.md.</footer>\n</main></body></html>\n",
    );
    h
}

fn cohort_card(h: &mut String, fleet: &Fleet, c: &CohortSummary) {
    let now = fleet.generated_at;
    let _ = write!(
        h,
        "<section class=\"card\" id=\"cohort-{name}\"><div class=\"head\"><h2>{name}</h2>\
         <span class=\"pill\">{devices}</span>",
        name = escape(&c.cohort),
        devices = plural(c.devices, "device", "devices"),
    );
    if c.silent > 0 {
        let _ = write!(h, "<span class=\"pill warn\">{} silent</span>", c.silent);
    }
    if c.dropped_reports > 0 {
        // Lost from full outboxes or refused by this server: the numbers
        // below may miss that many outcomes.
        let _ = write!(
            h,
            "<span class=\"pill warn\" title=\"reports the devices dropped (full outbox, or refused here); \
             per device in /v1/fleet\">{} lost</span>",
            plural(c.dropped_reports, "report", "reports")
        );
    }
    h.push_str("</div><div class=\"cols\"><div><h3>Running</h3><table><tr><th>version</th><th class=\"n\">devices</th><th class=\"n\">share</th><th style=\"width:45%\"></th></tr>");
    let running: u64 = c.versions.iter().map(|(_, n)| n).sum();
    for (version, n) in &c.versions {
        let pct = if c.devices > 0 {
            *n as f64 * 100.0 / c.devices as f64
        } else {
            0.0
        };
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td class=\"n\">{n}</td><td class=\"n\">{pct:.0}%</td>\
             <td><div class=\"bar\"><span style=\"width:{pct:.1}%\"></span></div></td></tr>",
            escape(version)
        );
    }
    if running < c.devices {
        let _ = write!(
            h,
            "<tr><td class=\"muted\">nothing installed</td><td class=\"n\">{}</td><td></td><td></td></tr>",
            c.devices - running
        );
    }
    h.push_str("</table></div><div><h3>Targets</h3>");
    if c.targets.is_empty() {
        h.push_str("<p class=\"muted\">No target reported yet.</p>");
    } else {
        h.push_str(
            "<table><tr><th>version</th><th class=\"n\">on target</th><th class=\"n\">in progress</th>\
             <th class=\"n\">tried</th><th class=\"n\">succeeded</th>\
             <th class=\"n\">rolled back</th><th class=\"n\">failed</th><th class=\"n\">success</th>\
             <th class=\"n\">consecutive failures</th><th>last attempt</th></tr>",
        );
        for t in c.targets.iter().take(TARGETS_SHOWN) {
            target_row(h, now, t);
        }
        h.push_str("</table>");
        if c.targets.len() > TARGETS_SHOWN {
            let _ = write!(
                h,
                "<p class=\"muted\">{} older target(s) in /v1/fleet.</p>",
                c.targets.len() - TARGETS_SHOWN
            );
        }
    }
    h.push_str("</div></div>");
    if c.silent > 0 {
        let mut quiet: Vec<_> = fleet
            .devices
            .iter()
            .filter(|d| d.silent && d.cohort == c.cohort)
            .collect();
        quiet.sort_by_key(|d| d.last_seen);
        h.push_str("<div class=\"silent\"><b>Silent:</b> ");
        let shown: Vec<String> = quiet
            .iter()
            .take(SILENT_SHOWN)
            .map(|d| {
                format!(
                    "<code>{}</code> ({})",
                    escape(&d.device_id),
                    when(now, d.last_seen)
                )
            })
            .collect();
        h.push_str(&shown.join(", "));
        if quiet.len() > SILENT_SHOWN {
            let _ = write!(h, " and {} more", quiet.len() - SILENT_SHOWN);
        }
        h.push_str("</div>");
    }
    h.push_str("</section>\n");
}

fn target_row(h: &mut String, now: Timestamp, t: &TargetSummary) {
    // A target nobody attempted (devices were installed with it, or it is
    // what silent devices last heard of) is shown, but greyed out.
    let idle = t.last_report_at.is_none();
    let rate = match t.success_percent() {
        None => "<span class=\"muted\">–</span>".to_string(),
        Some(p) => {
            let class = if p >= 95.0 {
                "ok"
            } else if p >= 80.0 {
                "mid"
            } else {
                "low"
            };
            format!("<span class=\"{class}\">{p:.1}%</span>")
        }
    };
    let consecutive = if t.consecutive_failures > 0 {
        format!("<span class=\"pill bad\">{}</span>", t.consecutive_failures)
    } else {
        "0".to_string()
    };
    let last = t.last_report_at.map_or_else(
        || "<span class=\"muted\">–</span>".to_string(),
        |at| when(now, at),
    );
    let _ = write!(
        h,
        "<tr{}><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{rate}</td><td class=\"n\">{consecutive}</td><td>{last}</td></tr>",
        if idle { " class=\"idle\"" } else { "" },
        escape(&t.version),
        t.on_target,
        t.in_progress,
        t.tried,
        t.succeeded,
        t.rolled_back,
        t.failed,
    );
}

fn failures(h: &mut String, fleet: &Fleet) {
    let now = fleet.generated_at;
    h.push_str("<section class=\"card\"><div class=\"head\"><h2>Latest failures</h2>");
    if fleet.recent_failures.is_empty() {
        h.push_str("</div><p class=\"muted\">None reported.</p></section>\n");
        return;
    }
    h.push_str(
        "</div><table><tr><th>when</th><th>device</th><th>cohort</th><th>version</th><th>outcome</th>\
         <th>stage</th><th>reason</th></tr>",
    );
    for f in &fleet.recent_failures {
        let outcome_class = if f.outcome == "rolled_back" {
            "pill warn"
        } else {
            "pill bad"
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td>\
             <td><span class=\"{outcome_class}\">{}</span></td><td>{}</td><td class=\"reason\">{}</td></tr>",
            when(now, f.at),
            escape(&f.device_id),
            escape(&f.cohort),
            f.to_version.as_deref().map_or_else(|| "–".to_string(), escape),
            escape(&f.outcome.replace('_', " ")),
            f.stage.as_deref().map_or_else(|| "–".to_string(), escape),
            escape(&f.reason),
        );
    }
    h.push_str("</table></section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{DeviceRow, Failure, Rows};

    #[test]
    fn escapes_every_value() {
        assert_eq!(escape("<script>\"'&"), "&lt;script&gt;&quot;&#39;&amp;");
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let rows = Rows {
            devices: vec![DeviceRow {
                device_id: "<b>dev</b>".into(),
                cohort: "stable".into(),
                running_version: Some("1.0.0".into()),
                to_version: Some("2.0.0".into()),
                last_outcome: "rolled_back".into(),
                last_reason: "<script>alert(1)</script>".into(),
                last_seen: now,
                dropped_reports: 3,
            }],
            failures: vec![Failure {
                device_id: "<b>dev</b>".into(),
                cohort: "stable".into(),
                at: now,
                to_version: Some("2.0.0".into()),
                outcome: "rolled_back".into(),
                stage: Some("health".into()),
                reason: "<script>alert(1)</script>".into(),
            }],
            ..Rows::default()
        };
        let fleet = Fleet::assemble(rows, now, std::time::Duration::from_secs(3600));
        let html = render(&fleet);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>dev"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<h2>stable</h2>"));
        assert!(html.contains(">3 reports lost</span>"), "{html}");
    }
}
