//! Reports of a check: terminal summary, JSON (the CLI contract), DOT of the culprit's
//! neighbourhood, a self-contained HTML page, JUnit XML.

use crate::checker::{Report, Row};
use crate::tolerance::TABLE;
use apr_ir::dot::{to_dot, Cluster, DotOptions};
use apr_ir::{Graph, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

/// A few lines for the terminal.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "check {}: {} positions at -O{}, {} node values compared",
        r.model, r.positions, r.opt_level, r.nodes_compared
    );
    match &r.culprit {
        None => {
            let worst = r.layer_curve.values().flatten().fold(0.0f64, |a, &b| a.max(b));
            let _ = writeln!(s, "verdict: pass (worst NMSE {worst:.2e})");
        }
        Some(c) => {
            let _ = writeln!(s, "verdict: MISMATCH at position {}", c.position);
            let _ = writeln!(s, "culprit: %{} {} ({}) — cause: {:?}", c.node, c.name, c.op, c.cause);
            let _ = writeln!(
                s,
                "metrics: nmse {:.3e} (bound {:.0e}, {}), max_abs {:.3e}, cosine {:.6}, non-finite {}",
                c.metrics.nmse,
                c.tolerance.nmse,
                c.tolerance.rule,
                c.metrics.max_abs,
                c.metrics.cosine,
                c.metrics.nonfinite
            );
            let _ = writeln!(s, "dispatch {} covers {} node(s): {:?}", c.dispatch, c.fused_group.len(), c.fused_group);
        }
    }
    s
}

/// JSON per the CLI contract (plus the per-layer curve and the compared rows).
pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// DOT of the culprit's neighbourhood (radius 3), the culprit red, its dispatch a cluster.
pub fn dot(g: &Graph, r: &Report) -> String {
    match &r.culprit {
        Some(c) => to_dot(
            g,
            &DotOptions {
                layer: None,
                around: Some((NodeId(c.node), 3)),
                highlight: Some(NodeId(c.node)),
                clusters: vec![Cluster {
                    label: format!("dispatch {}", c.dispatch),
                    nodes: c.fused_group.iter().map(|&n| NodeId(n)).collect(),
                }],
            },
        ),
        None => to_dot(g, &DotOptions { layer: Some(0), ..DotOptions::default() }),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// JUnit XML: one test case per position; the mismatching one fails naming the node.
pub fn junit(r: &Report) -> String {
    let failures = usize::from(r.culprit.is_some());
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites><testsuite name=\"apr-ir check {}\" tests=\"{}\" failures=\"{failures}\">",
        esc(&r.model),
        r.positions
    );
    for p in 0..r.positions {
        let _ = write!(s, "  <testcase classname=\"apr-ir.check.O{}\" name=\"position {p}\">", r.opt_level);
        if let Some(c) = r.culprit.as_ref().filter(|c| c.position == p) {
            let _ = write!(
                s,
                "<failure message=\"%{} {} ({:?})\">nmse {:.3e} max_abs {:.3e} cosine {:.6}; dispatch {} covers {:?}</failure>",
                c.node,
                esc(&c.name),
                c.cause,
                c.metrics.nmse,
                c.metrics.max_abs,
                c.metrics.cosine,
                c.dispatch,
                c.fused_group
            );
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("</testsuite></testsuites>\n");
    s
}

/// The nodes within `radius` edges of `center`, by BFS in both directions.
fn neighbourhood(g: &Graph, center: NodeId, radius: u32) -> BTreeSet<NodeId> {
    let users = g.users();
    let mut seen = BTreeSet::from([center]);
    let mut q = VecDeque::from([(center, 0u32)]);
    while let Some((id, d)) = q.pop_front() {
        if d == radius {
            continue;
        }
        let ins = g.node(id).map(|n| n.inputs.clone()).unwrap_or_default();
        for nb in ins.into_iter().chain(users.get(id.index()).cloned().unwrap_or_default()) {
            if seen.insert(nb) {
                q.push_back((nb, d + 1));
            }
        }
    }
    seen
}

/// An SVG drawing of the culprit's neighbourhood: nodes in columns by depth, edges as lines.
fn graph_svg(g: &Graph, r: &Report) -> String {
    let center = r.culprit.as_ref().map_or(NodeId(0), |c| NodeId(c.node));
    let group: BTreeSet<u32> = r.culprit.as_ref().map(|c| c.fused_group.iter().copied().collect()).unwrap_or_default();
    let nodes = neighbourhood(g, center, 2);
    let mut depth: BTreeMap<NodeId, usize> = BTreeMap::new();
    for &id in &nodes {
        let d = g
            .node(id)
            .map(|n| n.inputs.iter().filter_map(|i| depth.get(i)).map(|d| d + 1).max().unwrap_or(0))
            .unwrap_or(0);
        depth.insert(id, d);
    }
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut at: BTreeMap<NodeId, (usize, usize)> = BTreeMap::new();
    for (&id, &d) in &depth {
        let r = rows.entry(d).or_default();
        at.insert(id, (d, *r));
        *r += 1;
    }
    let (w, h) = (220usize, 44usize);
    let width = (depth.values().max().copied().unwrap_or(0) + 1) * w + 20;
    let height = (rows.values().max().copied().unwrap_or(1)) * h + 20;
    let mut s =
        format!("<svg id=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\">");
    let pos = |id: &NodeId| at.get(id).map(|&(c, r)| (10 + c * w, 10 + r * h));
    for &id in &nodes {
        let Some((x2, y2)) = pos(&id) else { continue };
        for i in g.node(id).map(|n| n.inputs.clone()).unwrap_or_default() {
            if let Some((x1, y1)) = pos(&i) {
                let _ = write!(
                    s,
                    "<line x1=\"{}\" y1=\"{}\" x2=\"{x2}\" y2=\"{}\" stroke=\"#999\"/>",
                    x1 + 180,
                    y1 + 15,
                    y2 + 15
                );
            }
        }
    }
    for &id in &nodes {
        let (Some((x, y)), Some(n)) = (pos(&id), g.node(id)) else { continue };
        let (fill, class) = if id == center && r.culprit.is_some() {
            ("#ff6666", "node culprit")
        } else if group.contains(&id.0) {
            ("#dde0ff", "node fused")
        } else {
            ("#f4f4f4", "node")
        };
        let label: String = format!("{} {}", id, n.name).chars().take(30).collect();
        let _ = write!(
            s,
            "<g class=\"{class}\" data-node=\"{}\"><rect x=\"{x}\" y=\"{y}\" width=\"180\" height=\"30\" rx=\"4\" fill=\"{fill}\" stroke=\"#555\"/><text x=\"{}\" y=\"{}\" font-size=\"11\" font-family=\"monospace\">{}</text><title>{} = {}</title></g>",
            id.0,
            x + 4,
            y + 19,
            esc(&label),
            esc(&n.name),
            esc(n.op.name())
        );
    }
    s.push_str("</svg>");
    s
}

/// An SVG line chart of log10(worst NMSE) per layer across positions.
fn curve_svg(r: &Report) -> String {
    let (w, h, pad) = (640.0f64, 240.0f64, 30.0f64);
    let n = f64::from(r.positions.max(2) - 1);
    let y_of = |v: f64| {
        let l = v.max(1e-20).log10().clamp(-20.0, 2.0);
        pad + (2.0 - l) / 22.0 * (h - 2.0 * pad)
    };
    let mut s = format!("<svg id=\"curve\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\">");
    let _ = write!(s, "<text x=\"4\" y=\"14\" font-size=\"11\">log10 NMSE (worst per layer) vs position</text>");
    for (k, (layer, vals)) in r.layer_curve.iter().enumerate() {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(p, &v)| format!("{:.1},{:.1}", pad + p as f64 / n * (w - 2.0 * pad), y_of(v)))
            .collect();
        let hue = (k * 47) % 360;
        let _ = write!(
            s,
            "<polyline class=\"layer\" data-layer=\"{}\" fill=\"none\" stroke=\"hsl({hue},60%,45%)\" points=\"{}\"><title>{}</title></polyline>",
            esc(layer),
            pts.join(" "),
            esc(layer)
        );
    }
    s.push_str("</svg>");
    s
}

fn rows_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "<table id=\"metrics\"><thead><tr><th>position</th><th>dispatch</th><th>node</th><th>name</th><th>nmse</th><th>max abs</th><th>cosine</th><th></th></tr></thead><tbody>",
    );
    for r in rows {
        let _ = write!(
            s,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>%{}</td><td>{}</td><td>{:.3e}</td><td>{:.3e}</td><td>{:.6}</td><td>{}</td></tr>",
            if r.pass { "pass" } else { "fail" },
            r.position,
            r.dispatch,
            r.node,
            esc(&r.name),
            r.nmse,
            r.max_abs,
            r.cosine,
            if r.pass { "ok" } else { "FAIL" }
        );
    }
    s.push_str("</tbody></table>");
    s
}

/// One self-contained page: verdict, the graph around the culprit, the per-layer error curve
/// and the per-node metrics of the last position checked. No external resources.
pub fn html(g: &Graph, r: &Report) -> String {
    let verdict = match &r.culprit {
        Some(c) => format!(
            "<p id=\"verdict\" class=\"mismatch\">MISMATCH at position {}: <b id=\"culprit\">%{} {}</b> ({}) — cause <b id=\"cause\">{:?}</b>, nmse {:.3e}</p>",
            c.position,
            c.node,
            esc(&c.name),
            esc(&c.op),
            c.cause,
            c.metrics.nmse
        ),
        None => "<p id=\"verdict\" class=\"pass\">pass</p>".to_string(),
    };
    let tol: String = TABLE
        .iter()
        .map(|(rule, v, what)| format!("<tr><td>{rule}</td><td>{v:.0e}</td><td>{}</td></tr>", esc(what)))
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>apr-ir check: {model}</title><style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}tr.fail{{background:#fdd}}.mismatch{{color:#b00}}.pass{{color:#070}}</style></head><body>\n<h1>apr-ir check — {model}</h1>\n{verdict}\n<p>{positions} positions at -O{opt}, {compared} node values compared.</p>\n<h2>Graph around the culprit</h2>\n{graph}\n<h2>Error per layer across positions</h2>\n{curve}\n<h2>Node metrics (position {last})</h2>\n{table}\n<h2>Tolerances</h2><table><tr><th>rule</th><th>NMSE bound</th><th>covers</th></tr>{tol}</table>\n<script>document.body.dataset.ready = 'yes';</script>\n</body></html>\n",
        model = esc(&r.model),
        positions = r.positions,
        opt = r.opt_level,
        compared = r.nodes_compared,
        graph = graph_svg(g, r),
        curve = curve_svg(r),
        last = r.rows.first().map_or(0, |x| x.position),
        table = rows_table(&r.rows),
    )
}
