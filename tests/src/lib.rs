//! Shared helpers for the end-to-end tests of the `apr-ir` command line.
//!
//! The tests in `tests/tests/*.rs` drive the real binary the way a user does: they run it as
//! a process, on the fixture models of `tests/fixtures/`, and look only at its exit code,
//! stdout, stderr and the files it writes. This crate holds what they share: where the
//! binary and the fixtures are, running the CLI with a time limit, temporary directories,
//! running work over the cores, and the policy for optional external tools (Graphviz,
//! gguf-py).
//!
//! # Where the binary comes from
//!
//! Cargo hands `CARGO_BIN_EXE_<name>` only to tests of the package that owns the binary,
//! and a binary-only package cannot be a dependency, so this package finds `apr-ir`
//! itself: test executables live in `<target>/<profile>/deps/`, so the binary is
//! `<target>/<profile>/apr-ir`, derived from [`std::env::current_exe`]. Before the first
//! use in each test process, [`bin`] runs `cargo build -p apr-ir-cli` for that same profile
//! and target directory (once, behind a `OnceLock`), so the tests always run the CLI built
//! from the current tree, never a stale one; when nothing changed this is a no-op of a few
//! hundred milliseconds. Set `APR_IR_BIN=/path/to/apr-ir` to test a given binary without
//! building (for a cross-compiled target directory layout, for example).
//!
//! # Optional tools
//!
//! Graphviz (`dot`) and gguf-py (`python3 -c "import gguf"`) are not Rust dependencies. When
//! one is missing, a test skips only the part that needs it and prints a note, except under
//! `CI=true`, where a missing tool is a failure: CI must run every check.

// Test support: failing loudly (and saying why on stderr) is this code's job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Default limit for one CLI run; hostile-input tests use a tighter one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (the directory holding the workspace `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// The fixture architectures, as named in the file names.
pub const ARCHS: [&str; 3] = ["qwen2", "llama", "qwen3"];
/// The quantizations the GGUF fixtures come in.
pub const FIXTURE_QUANTS: [&str; 4] = ["f32", "f16", "q8_0", "q4_k"];

/// The GGUF fixture types of an architecture: qwen3's fixtures (tools/fixtures/make_qwen3.py)
/// have no f32 file.
pub fn fixture_quants(arch: &str) -> &'static [&'static str] {
    if arch == "qwen3" {
        &FIXTURE_QUANTS[1..]
    } else {
        &FIXTURE_QUANTS
    }
}

/// A fixture model: a GGUF file or an HF directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    /// `qwen2`, `llama` or `qwen3`.
    pub arch: &'static str,
    /// Path of the GGUF file or HF directory.
    pub path: PathBuf,
    /// True for an HF directory.
    pub hf: bool,
}

impl Fixture {
    /// A short name for messages and temp files: `qwen2-q4_k`, `llama-hf`.
    pub fn label(&self) -> String {
        let stem = self.path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
        if self.hf {
            format!("{}-hf", self.arch)
        } else {
            stem.to_string()
        }
    }
}

/// Every GGUF fixture model (`tests/fixtures/models/{arch}-{quant}.gguf`).
pub fn gguf_fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for arch in ARCHS {
        for &q in fixture_quants(arch) {
            let path = fixture(&format!("models/{arch}-{q}.gguf"));
            assert!(path.is_file(), "fixture {} is missing (see tools/fixtures/README.md)", path.display());
            out.push(Fixture { arch, path, hf: false });
        }
    }
    out
}

/// The HF fixture directories (`tests/fixtures/hf/{arch}-tiny/`).
pub fn hf_fixtures() -> Vec<Fixture> {
    ARCHS
        .iter()
        .map(|&arch| {
            let path = fixture(&format!("hf/{arch}-tiny"));
            assert!(
                path.join("config.json").is_file(),
                "fixture {} is missing (see tools/fixtures/README.md)",
                path.display()
            );
            Fixture { arch, path, hf: true }
        })
        .collect()
}

/// Every fixture model: the GGUF files, then the HF directories.
pub fn all_fixtures() -> Vec<Fixture> {
    let mut v = gguf_fixtures();
    v.extend(hf_fixtures());
    v
}

/// The `apr-ir` binary to test (see the crate docs); built on first use.
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate_and_build)
}

fn locate_and_build() -> PathBuf {
    if let Some(p) = std::env::var_os("APR_IR_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "APR_IR_BIN={} is not a file", p.display());
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/<test exe>
    let deps = exe.parent().expect("test executable has a directory");
    let profile_dir =
        if deps.file_name() == Some(OsStr::new("deps")) { deps.parent().expect("deps has a parent") } else { deps };
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    let profile = profile_dir.file_name().and_then(|s| s.to_str()).expect("profile dir name");
    let bin = profile_dir.join(format!("apr-ir{}", std::env::consts::EXE_SUFFIX));

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", "apr-ir-cli", "--bin", "apr-ir", "--target-dir"])
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(status.success(), "building the CLI failed ({status}): {cmd:?}");
    assert!(bin.is_file(), "{cmd:?} succeeded but {} does not exist", bin.display());
    bin
}

/// What one CLI run did.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command line, for messages.
    pub cmdline: String,
    /// The exit code; `None` when the process was killed by a signal or timed out.
    pub code: Option<i32>,
    /// The signal that ended the process, if any (unix).
    pub signal: Option<i32>,
    /// True when the run was killed for exceeding its time limit.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// Wall-clock time from spawn to exit, including process start.
    pub elapsed: Duration,
}

impl Run {
    /// Panics unless the run exited 0; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.code == Some(0), "{self:#?}\nexpected success");
        &self.stdout
    }

    /// Panics unless the run exited 2 with exactly one stderr line `apr-ir: error: …`;
    /// returns that line. A panic (101), a signal or a timeout fails with the details.
    #[track_caller]
    pub fn one_line_error(&self) -> &str {
        assert!(!self.timed_out, "{self:#?}\ntimed out");
        assert!(self.signal.is_none(), "{self:#?}\nkilled by a signal");
        assert!(self.code != Some(101), "{self:#?}\npanicked");
        assert_eq!(self.code, Some(2), "{self:#?}\nexpected exit code 2");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{self:#?}\nexpected exactly one line on stderr");
        assert!(lines[0].starts_with("apr-ir: error: "), "{self:#?}\nstderr should start with `apr-ir: error: `");
        lines[0]
    }

    /// The stdout as one JSON value (panics with the output if it is not exactly that).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("{self:#?}\nstdout is not one JSON value: {e}"))
    }
}

/// Run `apr-ir ARGS` with [`DEFAULT_TIMEOUT`].
pub fn apr_ir<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    apr_ir_within(args, DEFAULT_TIMEOUT)
}

/// Run `apr-ir ARGS`, killing it after `limit`.
pub fn apr_ir_within<I, S>(args: I, limit: Duration) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin());
    cmd.args(args).env_remove("RUST_LOG").env("RUST_BACKTRACE", "0");
    run_within(cmd, limit)
}

/// Run any command with a time limit, capturing stdout and stderr.
pub fn run_within(mut cmd: Command, limit: Duration) -> Run {
    let cmdline = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmdline}: {e}"));
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().expect("piped stdout")));
    let err = pipe(Box::new(child.stderr.take().expect("piped stderr")));
    let mut nap = Duration::from_micros(200);
    let (status, timed_out): (ExitStatus, bool) = loop {
        if let Some(s) = child.try_wait().expect("waiting for the child") {
            break (s, false);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().expect("waiting for the killed child"), true);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    Run {
        cmdline,
        code: if timed_out { None } else { status.code() },
        signal: signal_of(&status),
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed,
    }
}

#[cfg(unix)]
fn signal_of(s: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    s.signal()
}

#[cfg(not(unix))]
fn signal_of(_: &ExitStatus) -> Option<i32> {
    None
}

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name contains `tag`, the process id and a counter.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("apr-ir-tests-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `<dir>/<name>`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `f` over `items` on every core (work-stealing by index); results in input order.
/// A panic in `f` fails the caller with the first panic's message.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// True when running under CI (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Decide whether a part of a test that needs an optional tool can run: true if `available`;
/// otherwise a failure under CI, or a note on stderr and false elsewhere. The note bypasses
/// the test harness's output capture, so it shows even when the test passes.
#[track_caller]
pub fn tool_or_skip(tool: &str, available: bool, install: &str, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(!in_ci(), "{tool} is required under CI=true ({what}); install it: {install}");
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "note: {tool} is not available, skipping {what} (install: {install})");
    false
}

/// Whether Graphviz's `dot` program runs.
pub fn graphviz_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        Command::new("dot").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    })
}

/// Whether `python3` can import gguf-py and numpy.
pub fn gguf_py_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import gguf, numpy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// What gguf-py sees in GGUF files: for each path, in order, the JSON object that
/// `tools/fixtures/gguf_py_dump.py` prints. Importing gguf-py takes most of a second, so the
/// paths are shared among one python process per core.
pub fn gguf_py_dump(paths: &[PathBuf]) -> Vec<serde_json::Value> {
    let script = workspace_root().join("tools/fixtures/gguf_py_dump.py");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let chunks: Vec<&[PathBuf]> = paths.chunks(paths.len().div_ceil(cores).max(1)).collect();
    par_map(&chunks, |chunk| {
        let mut cmd = Command::new("python3");
        cmd.arg(&script).args(chunk.iter());
        let run = run_within(cmd, DEFAULT_TIMEOUT);
        run.ok();
        let objects: Vec<serde_json::Value> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{run:#?}\nnot a JSON line: {e}")))
            .collect();
        assert_eq!(objects.len(), chunk.len(), "{run:#?}\none JSON line per file");
        objects
    })
    .into_iter()
    .flatten()
    .collect()
}

/// The part of an error line after `apr-ir: error: `.
pub fn error_message(line: &str) -> &str {
    line.strip_prefix("apr-ir: error: ").unwrap_or(line)
}

/// One tensor of a fixture file, read from the file's own tensor table (not the lowering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTensor {
    pub name: String,
    /// Storage type as the file names it (`Q4_K`, `F32`, `BF16`).
    pub type_name: String,
    /// Row-major shape, outermost first.
    pub shape: Vec<u64>,
    /// Bytes of tensor data.
    pub bytes: u64,
}

/// The tensor table of a fixture: for GGUF from the header (sizes recomputed here from the
/// dims and ggml's block sizes), for an HF directory by parsing each safetensors header.
pub fn file_tensors(fx: &Fixture) -> Vec<FileTensor> {
    if fx.hf {
        return safetensors_tensors(&fx.path);
    }
    let file = apr_ir_model::gguf::GgufFile::open(&fx.path).unwrap_or_else(|e| panic!("{}: {e}", fx.path.display()));
    file.gguf()
        .tensors()
        .iter()
        .map(|t| {
            let ty = t.ggml_type();
            let elems: u64 = t.dims().iter().product();
            assert_eq!(elems % ty.block_len(), 0, "{}", t.name());
            FileTensor {
                name: t.name().to_string(),
                type_name: ty.name().to_string(),
                shape: t.shape(),
                bytes: elems / ty.block_len() * ty.type_size(),
            }
        })
        .collect()
}

/// Tensors of every `*.safetensors` file of an HF directory, from their JSON headers
/// (8-byte little-endian header length, then the header).
pub fn safetensors_tensors(dir: &Path) -> Vec<FileTensor> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension() == Some(OsStr::new("safetensors")))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors header JSON");
        for (name, v) in header.as_object().expect("header object") {
            if name == "__metadata__" {
                continue;
            }
            let offs: Vec<u64> = v["data_offsets"]
                .as_array()
                .expect("data_offsets")
                .iter()
                .map(|x| x.as_u64().expect("offset"))
                .collect();
            let shape = v["shape"].as_array().expect("shape").iter().map(|x| x.as_u64().expect("dim")).collect();
            out.push(FileTensor {
                name: name.clone(),
                type_name: v["dtype"].as_str().expect("dtype").to_string(),
                shape,
                bytes: offs[1] - offs[0],
            });
        }
    }
    out
}

/// Hyper-parameters of a fixture as its file states them: GGUF metadata or `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileParams {
    pub n_layers: u64,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub head_dim: u64,
}

/// Read [`FileParams`] from a fixture. GGUF values are f32 in the file and are returned
/// exactly (widened to f64), which is what the lowering must use.
pub fn file_params(fx: &Fixture) -> FileParams {
    if fx.hf {
        let text = std::fs::read_to_string(fx.path.join("config.json")).expect("config.json");
        let c: serde_json::Value = serde_json::from_str(&text).expect("config.json is JSON");
        let u = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("config.json {k}"));
        let theta =
            c["rope_theta"].as_f64().or_else(|| c["rope_parameters"]["rope_theta"].as_f64()).expect("rope theta");
        let head_dim = c["head_dim"].as_u64().unwrap_or(u("hidden_size") / u("num_attention_heads"));
        return FileParams {
            n_layers: u("num_hidden_layers"),
            rope_theta: theta,
            rms_eps: c["rms_norm_eps"].as_f64().expect("rms_norm_eps"),
            head_dim,
        };
    }
    let file = apr_ir_model::gguf::GgufFile::open(&fx.path).unwrap_or_else(|e| panic!("{}: {e}", fx.path.display()));
    let m = file.gguf().metadata();
    let a = m.get_str("general.architecture").expect("general.architecture");
    assert_eq!(a, fx.arch, "{}", fx.path.display());
    let head_dim = match m.get_u64(&format!("{a}.attention.key_length")) {
        Ok(d) => d,
        Err(_) => {
            m.get_u64(&format!("{a}.embedding_length")).expect("embedding_length")
                / m.get_u64(&format!("{a}.attention.head_count")).expect("head_count")
        }
    };
    FileParams {
        n_layers: m.get_u64(&format!("{a}.block_count")).expect("block_count"),
        rope_theta: f64::from(m.get_f32(&format!("{a}.rope.freq_base")).expect("freq_base")),
        rms_eps: f64::from(m.get_f32(&format!("{a}.attention.layer_norm_rms_epsilon")).expect("rms eps")),
        head_dim,
    }
}

/// Ops that need no kernel: leaves, and views that only reinterpret a buffer. Written out
/// here (not taken from the library) so the tests check the CLI against the op set's
/// documented meaning.
pub const NON_COMPUTE_OPS: [&str; 5] = ["input", "weight", "const", "state", "reshape"];

/// One node of the `compile -o` JSON, as the CLI contract describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct IrNode {
    pub id: u64,
    pub name: String,
    pub op: String,
    pub inputs: Vec<u64>,
    /// The op's attributes (`attrs`), or null.
    pub attrs: serde_json::Value,
}

impl IrNode {
    pub fn is_compute(&self) -> bool {
        !NON_COMPUTE_OPS.contains(&self.op.as_str())
    }
}

/// One dispatch of `schedule.dispatches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    pub covers: Vec<u64>,
    pub outputs: Vec<u64>,
}

/// The `compile -o` JSON: the IR and its schedule.
#[derive(Debug, Clone)]
pub struct IrJson {
    pub nodes: Vec<IrNode>,
    pub dispatches: Vec<Dispatch>,
    /// The whole document.
    pub raw: serde_json::Value,
}

impl IrJson {
    /// Parse the contract fields out of a `compile -o` file, panicking on anything missing.
    pub fn read(path: &Path) -> IrJson {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let raw: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        let ids = |v: &serde_json::Value, what: &str| -> Vec<u64> {
            v.as_array()
                .unwrap_or_else(|| panic!("{what} is not an array"))
                .iter()
                .map(|x| x.as_u64().unwrap_or_else(|| panic!("{what}: {x} is not an id")))
                .collect()
        };
        let nodes = raw["nodes"]
            .as_array()
            .expect("top-level `nodes` array")
            .iter()
            .map(|n| IrNode {
                id: n["id"].as_u64().unwrap_or_else(|| panic!("node without numeric `id`: {n}")),
                name: n["name"].as_str().unwrap_or_else(|| panic!("node without `name`: {n}")).to_string(),
                op: n["op"].as_str().unwrap_or_else(|| panic!("node without `op`: {n}")).to_string(),
                inputs: ids(&n["inputs"], "node inputs"),
                attrs: n["attrs"].clone(),
            })
            .collect();
        let dispatches = raw["schedule"]["dispatches"]
            .as_array()
            .expect("`schedule.dispatches` array")
            .iter()
            .map(|d| Dispatch { covers: ids(&d["covers"], "covers"), outputs: ids(&d["outputs"], "outputs") })
            .collect();
        IrJson { nodes, dispatches, raw }
    }

    /// The node named `name`.
    pub fn by_name(&self, name: &str) -> &IrNode {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// The node with id `id`.
    pub fn node(&self, id: u64) -> &IrNode {
        self.nodes.iter().find(|n| n.id == id).unwrap_or_else(|| panic!("no node %{id}"))
    }

    /// Ids of the nodes that use `id` as an operand.
    pub fn users(&self, id: u64) -> Vec<u64> {
        self.nodes.iter().filter(|n| n.inputs.contains(&id)).map(|n| n.id).collect()
    }
}

/// `apr-ir compile MODEL -o <dir>/<name>.json`, checked to succeed; the parsed result.
pub fn compile_to_json(model: &Path, dir: &TempDir, name: &str) -> (PathBuf, IrJson) {
    compile_to_json_at(model, dir, name, None)
}

/// [`compile_to_json`] at an optimization level (`None`: the default).
pub fn compile_to_json_at(model: &Path, dir: &TempDir, name: &str, level: Option<u8>) -> (PathBuf, IrJson) {
    let out = dir.join(&format!("{name}.json"));
    let level = level.map(|l| format!("-O{l}"));
    let mut args = vec![OsStr::new("compile"), model.as_os_str(), OsStr::new("-o"), out.as_os_str()];
    if let Some(l) = &level {
        args.push(OsStr::new(l));
    }
    apr_ir(args).ok();
    let ir = IrJson::read(&out);
    (out, ir)
}
