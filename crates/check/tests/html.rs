//! The HTML report loads in headless Chromium: self-contained (no network), its script runs,
//! and the culprit, the graph, the error curve and the metrics table are in the DOM.
//! Chromium is installed by the test command; without it the test fails when CI=true.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::print_stderr)]

use apr_ir::{DType, GraphBuilder, GraphMeta, InputKind, NodeId, Op, TensorType};
use apr_ir_check::checker::{Cause, Culprit, MetricsJson, Report, Row};
use apr_ir_check::report;
use apr_ir_check::tolerance::Tolerance;
use std::process::Command;

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|c| {
        Command::new(c).arg("--version").output().ok().filter(|o| o.status.success()).map(|_| c.to_string())
    })
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let meta = GraphMeta { name: "tiny<&>".into(), arch: "test".into(), max_ctx: 4, extra: Default::default() };
    let mut b = GraphBuilder::new(meta);
    let t = b.leaf("token", Op::Input { kind: InputKind::Token }, TensorType::new(DType::I32, &[1])).unwrap();
    let w = b.leaf("w", Op::Weight { tensor: "w".into() }, TensorType::new(DType::F32, &[4, 8])).unwrap();
    let x = b.push("x", Op::Gather, &[w, t]).unwrap();
    let a = b.push("blk.0.a", Op::Neg, &[x]).unwrap();
    let e = b.push("blk.0.e", Op::Exp, &[a]).unwrap();
    let o = b.push("blk.0.o", Op::Neg, &[e]).unwrap();
    b.output("out", o);
    let g = b.finish().unwrap();
    let row = |node: NodeId, name: &str, nmse: f64, pass: bool| Row {
        position: 2,
        dispatch: node.index() - 2,
        node: node.0,
        name: name.into(),
        layer: Some(0),
        nmse,
        max_abs: nmse.sqrt(),
        cosine: 1.0 - nmse,
        pass,
    };
    let r = Report {
        verdict: "mismatch",
        positions: 3,
        opt_level: 2,
        nodes_compared: 12,
        culprit: Some(Culprit {
            node: e.0,
            name: "blk.0.e".into(),
            op: "exp".into(),
            position: 2,
            dispatch: 1,
            fused_group: vec![a.0, e.0, o.0],
            cause: Cause::Kernel,
            metrics: MetricsJson { nmse: 2.5e-3, max_abs: 0.1, cosine: 0.999, nonfinite: 0 },
            tolerance: Tolerance { nmse: 1e-7, rule: "elementwise" },
        }),
        layer_curve: [("blk.0".to_string(), vec![1e-14, 1e-13, 2.5e-3]), ("other".to_string(), vec![0.0, 0.0, 0.0])]
            .into_iter()
            .collect(),
        worst_by_rule: Default::default(),
        rows: vec![row(x, "x", 0.0, true), row(o, "blk.0.o", 2.5e-3, false)],
        model: "tiny<&>".into(),
    };
    let html = report::html(&g, &r);
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "the page must be self-contained");
    let dir = std::env::temp_dir().join(format!("apr-ir-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, &html).unwrap();

    let Some(bin) = chromium() else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but no Chromium to load the HTML report");
        eprintln!("SKIPPED: no chromium (install it: apt-get install chromium)");
        return;
    };
    let out = Command::new(&bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(dom.contains("data-ready=\"yes\""), "the page's script did not run:\n{dom}");
    assert!(dom.contains("id=\"culprit\">%4 blk.0.e</b>"), "culprit missing:\n{dom}");
    assert!(dom.contains("class=\"node culprit\" data-node=\"4\""), "culprit not highlighted in the graph");
    assert_eq!(dom.matches("class=\"node fused\"").count(), 2, "the rest of the fused group is marked");
    assert_eq!(dom.matches("class=\"layer\"").count(), 2, "one curve per layer");
    assert_eq!(dom.matches("<tr class=\"fail\">").count(), 1);
    assert!(dom.contains("tiny&lt;&amp;&gt;"), "names are escaped");
}
