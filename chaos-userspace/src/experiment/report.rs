//! The verdict as files: JUnit XML for CI (one testcase per condition per phase), and one
//! self-contained HTML page with a timeline of the probes' latency and failures, the fault
//! windows shaded with their injected counts, and the conditions.
use std::fmt::Write as _;

use super::run::{Outcome, Phase, Report};

pub fn junit(report: &Report) -> String {
    let failures =
        report.conditions.iter().filter(|c| !c.held).count() + usize::from(report.exit_code == 3);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total = report.conditions.len() + 1;
    let _ = writeln!(
        xml,
        "<testsuite name=\"{}\" tests=\"{total}\" failures=\"{failures}\" timestamp=\"{}\">",
        escape(&report.name),
        escape(&report.started_at)
    );
    // The run itself: did the steady state hold before injection, and did it finish unaborted.
    let _ = write!(
        xml,
        "  <testcase classname=\"{}\" name=\"experiment completed\">",
        escape(&report.name)
    );
    match &report.outcome {
        Outcome::Aborted { reason } => {
            let _ = write!(
                xml,
                "<failure message=\"aborted\">{}</failure>",
                escape(reason)
            );
        }
        Outcome::SteadyStateFailed => {
            let _ = write!(
                xml,
                "<failure message=\"steady state did not hold in warm-up\">nothing was injected</failure>"
            );
        }
        _ => {}
    }
    xml.push_str("</testcase>\n");
    for condition in &report.conditions {
        let _ = write!(
            xml,
            "  <testcase classname=\"{}.{}\" name=\"{}\">",
            escape(&report.name),
            condition.phase.name(),
            escape(&condition.condition)
        );
        if !condition.held {
            let _ = write!(
                xml,
                "<failure message=\"{} did not hold in {}\">{}</failure>",
                escape(&condition.condition),
                condition.phase.name(),
                escape(&condition.message)
            );
        } else {
            let _ = write!(
                xml,
                "<system-out>{}</system-out>",
                escape(&condition.message)
            );
        }
        xml.push_str("</testcase>\n");
    }
    xml.push_str("</testsuite>\n");
    xml
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const WIDTH: f64 = 960.0;
const PLOT_HEIGHT: f64 = 220.0;
const COLOURS: &[&str] = &["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"];

/// One page, no external resources: an SVG timeline per probe (latency, failed checks in red),
/// phases as bands, fault windows shaded with their injected counts, the conditions' table.
pub fn html(report: &Report) -> String {
    let end = report
        .phases
        .last()
        .map_or(1.0, |(_, _, end)| end.max(0.001));
    let x = |t: f64| 50.0 + t / end * (WIDTH - 70.0);
    let verdict = match &report.outcome {
        Outcome::Held => ("held", "#2ca02c", "The hypothesis held.".to_string()),
        Outcome::NotHeld => (
            "not held",
            "#d62728",
            "The hypothesis did not hold.".to_string(),
        ),
        Outcome::SteadyStateFailed => (
            "steady state failed",
            "#ff7f0e",
            "The steady state did not hold in warm-up: nothing was injected.".to_string(),
        ),
        Outcome::Aborted { reason } => ("aborted", "#ff7f0e", format!("Aborted: {reason}")),
    };
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{name}: {v}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}} h1{{margin-bottom:4px}}\
         .verdict{{display:inline-block;padding:4px 10px;border-radius:4px;color:#fff;background:{colour}}}\
         table{{border-collapse:collapse;margin:12px 0}} td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
         .held{{color:#2ca02c;font-weight:bold}} .failed{{color:#d62728;font-weight:bold}}\
         svg text{{font-size:11px}}</style></head><body>\
         <h1>{name}</h1><p>{description}</p><p><span class=\"verdict\">{v}</span> {sentence} \
         Exit code {code}. Started {started}.</p>",
        name = escape(&report.name),
        v = verdict.0,
        colour = verdict.1,
        sentence = escape(&verdict.2),
        description = escape(report.description.as_deref().unwrap_or("")),
        code = report.exit_code,
        started = escape(&report.started_at),
    );
    let probes: Vec<&String> = report.stats.keys().collect();
    for (index, probe) in probes.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let samples: Vec<_> = report
            .samples
            .iter()
            .filter(|s| &&s.probe == probe)
            .collect();
        let top = samples
            .iter()
            .map(|s| s.check.latency_ms)
            .fold(1.0_f64, f64::max)
            * 1.1;
        let y = |ms: f64| 20.0 + PLOT_HEIGHT - ms / top * PLOT_HEIGHT;
        let _ = write!(
            page,
            "<h2>{}</h2><svg width=\"{WIDTH}\" height=\"{}\" role=\"img\" aria-label=\"timeline of {}\">",
            escape(probe),
            PLOT_HEIGHT + 50.0,
            escape(probe)
        );
        for (phase, start, stop) in &report.phases {
            let fill = match phase {
                Phase::Warmup => "#f4f8fb",
                Phase::Injection => "#fff",
                Phase::Cooldown => "#f4fbf5",
            };
            let _ = write!(
                page,
                "<rect x=\"{:.1}\" y=\"20\" width=\"{:.1}\" height=\"{PLOT_HEIGHT}\" fill=\"{fill}\"/>\
                 <text x=\"{:.1}\" y=\"14\">{}</text>",
                x(*start),
                (x(*stop) - x(*start)).max(0.0),
                x(*start) + 2.0,
                phase.name()
            );
        }
        for fault in &report.faults {
            let stop = fault.end_s.unwrap_or(end);
            let _ = write!(
                page,
                "<rect class=\"fault\" x=\"{:.1}\" y=\"20\" width=\"{:.1}\" height=\"{PLOT_HEIGHT}\" \
                 fill=\"#d62728\" fill-opacity=\"0.12\"/><text x=\"{:.1}\" y=\"34\" fill=\"#a00\">\
                 {} {} {}</text>",
                x(fault.start_s),
                (x(stop) - x(fault.start_s)).max(1.0),
                x(fault.start_s) + 3.0,
                fault.name(),
                fault.verb(),
                fault.injected
            );
        }
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.at_s), y(s.check.latency_ms)))
            .collect();
        let _ = write!(
            page,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
        // The error ratio over the last 10 checks, on the same height (0 to 1), dashed.
        let ratio: Vec<String> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let window = &samples[i.saturating_sub(9)..=i];
                let failed = window.iter().filter(|w| !w.check.ok).count();
                let share = failed as f64 / window.len() as f64;
                format!(
                    "{:.1},{:.1}",
                    x(s.at_s),
                    20.0 + PLOT_HEIGHT - share * PLOT_HEIGHT
                )
            })
            .collect();
        let _ = write!(
            page,
            "<polyline class=\"error-ratio\" fill=\"none\" stroke=\"#d62728\" stroke-dasharray=\"4 3\" \
             stroke-width=\"1\" points=\"{}\"/><text x=\"{:.1}\" y=\"28\" fill=\"#d62728\">error ratio 1</text>",
            ratio.join(" "),
            WIDTH - 90.0
        );
        for sample in samples.iter().filter(|s| !s.check.ok) {
            let _ = write!(
                page,
                "<circle class=\"failed-check\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#d62728\"><title>{}</title></circle>",
                x(sample.at_s),
                y(sample.check.latency_ms),
                escape(sample.check.error.as_deref().unwrap_or("failed"))
            );
        }
        let _ = write!(
            page,
            "<line x1=\"50\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
             <line x1=\"50\" y1=\"20\" x2=\"50\" y2=\"{b}\" stroke=\"#999\"/>\
             <text x=\"4\" y=\"28\">{top:.0} ms</text><text x=\"4\" y=\"{b}\">0</text>\
             <text x=\"50\" y=\"{t}\">0 s</text><text x=\"{r2}\" y=\"{t}\">{end:.1} s</text></svg>",
            b = 20.0 + PLOT_HEIGHT,
            r = WIDTH - 20.0,
            t = PLOT_HEIGHT + 40.0,
            r2 = WIDTH - 60.0,
        );
        if let Some(stats) = report.stats.get(*probe) {
            page.push_str("<table><tr><th>phase</th><th>checks</th><th>failed</th><th>error ratio</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th></tr>");
            for (phase, s) in stats {
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
                    phase.name(),
                    s.checks,
                    s.failures,
                    s.error_ratio,
                    s.p50_latency_ms,
                    s.p99_latency_ms,
                    s.max_latency_ms
                );
            }
            page.push_str("</table>");
        }
    }
    page.push_str("<h2>Hypothesis</h2><table><tr><th>phase</th><th>condition</th><th>result</th><th>measured</th></tr>");
    for condition in &report.conditions {
        let _ = write!(
            page,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"{}\">{}</td><td>{}</td></tr>",
            condition.phase.name(),
            escape(&condition.condition),
            if condition.held { "held" } else { "failed" },
            if condition.held {
                "held"
            } else {
                "did not hold"
            },
            escape(&condition.message)
        );
    }
    page.push_str("</table><h2>Faults</h2><table><tr><th>#</th><th>kind</th><th>from s</th><th>to s</th><th>matched</th><th>injected</th><th>error</th></tr>");
    for fault in &report.faults {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            fault.index,
            fault.kind,
            fault.start_s,
            fault.end_s.map_or("-".into(), |e| format!("{e:.1}")),
            fault.matched,
            fault.injected,
            escape(fault.error.as_deref().unwrap_or(""))
        );
    }
    page.push_str("</table>");
    if !report.rollback.is_empty() {
        page.push_str("<h2>Rollback</h2><ul>");
        for line in &report.rollback {
            let _ = write!(page, "<li><code>{}</code></li>", escape(line));
        }
        page.push_str("</ul>");
    }
    page.push_str("</body></html>\n");
    page
}
