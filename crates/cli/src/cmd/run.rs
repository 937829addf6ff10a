//! `apr-ir run`: generate text with a model on the CPU reference interpreter or the wgpu
//! backend (at -O0, -O1 or -O2; behind a CPU parity gate).

use crate::npy;
use anyhow::{bail, Context, Result};
use apr_ir_gen::{generate, GenerateOptions, SamplerConfig};
use apr_ir_model::chat::Message;
use apr_ir_model::tokenizer::{StreamDecoder, Tokenizer};
use apr_ir_model::Model;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use crate::backend::{self, Backend};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A GGUF file or an HF model directory; the built-in default model if omitted.
    model: Option<PathBuf>,
    /// Text to continue (or, with --chat, the user's message).
    #[arg(long, conflicts_with = "tokens", required_unless_present = "tokens")]
    prompt: Option<String>,
    /// Wrap the prompt in the model's chat template.
    #[arg(long, requires = "prompt")]
    chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// A variable for the chat template, as transformers' `apply_chat_template(**kwargs)` passes
    /// it: `--chat-arg enable_thinking=false` (Qwen3 without a thinking block). VALUE is read as
    /// JSON where it parses (false, 3, [1, 2]), else as a string. Repeatable.
    #[arg(long = "chat-arg", requires = "chat", value_name = "NAME=VALUE", value_parser = parse_chat_arg)]
    chat_args: Vec<(String, serde_json::Value)>,
    /// Token ids to start from, instead of a prompt: 1,2,3.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    tokens: Option<Vec<u32>>,
    /// Where to run: cpu (the reference interpreter) or gpu (wgpu).
    #[arg(long, value_enum, default_value = "cpu")]
    backend: Backend,
    /// Same as --backend cpu; never initializes a GPU.
    #[arg(long, conflicts_with = "backend")]
    no_gpu: bool,
    /// Optimization level of the GPU schedule: 0 = one dispatch per compute node, 1 = row-local
    /// fusion (norms, softmax, RoPE, SwiGLU), 2 = also matvec epilogues, attention, cache
    /// writes. The CPU backend interprets the graph node by node whatever the level.
    #[arg(short = 'O', default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    opt: u8,
    /// Most tokens to generate (0: only process the prompt) [default: 128, or what the
    /// model's context leaves after the prompt].
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample only among the most likely tokens whose probability reaches P.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run on the GPU without the CPU parity gate (results are then unverified).
    #[arg(long)]
    skip_parity_gate: bool,
    /// Self-test of the parity gate: inject a fault into the GPU schedule (NODE[:KIND], as
    /// `apr-ir check --inject-fault`); the gate must catch it and name the node.
    #[arg(long, value_name = "NODE[:KIND]", hide = true)]
    inject_fault: Option<String>,
    /// Write the logits of every processed position as float32 .npy, shape [positions, vocab].
    #[arg(long, value_name = "FILE.npy")]
    dump_logits: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let backend = if args.no_gpu { Backend::Cpu } else { args.backend };
    let level = super::opt_level(args.opt)?;
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature must be a finite number >= 0");
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1]");
    }
    let model = crate::load::open_model(args.model.as_deref())?;
    let tokenizer = model.tokenizer().context("reading the model's tokenizer")?;
    let prompt = prompt_tokens(&args, &model, &tokenizer)?;
    let vocab = model.params.vocab;
    if let Some(bad) = prompt.iter().find(|&&t| u64::from(t) >= vocab) {
        bail!("token id {bad} is outside the vocabulary of {vocab}");
    }
    let ctx = model.params.context_length;
    let room = ctx.saturating_sub(prompt.len() as u64);
    let max_tokens = args.max_tokens.unwrap_or_else(|| u32::try_from(room.min(128)).unwrap_or(128));
    let needed = prompt.len() as u64 + u64::from(max_tokens);
    if needed > ctx {
        bail!(
            "{needed} positions (prompt {} + max tokens {max_tokens}) exceed the model's context of {ctx}",
            prompt.len()
        );
    }
    let graph = model.lower(Some(needed.max(1)))?;
    let fault = match (&args.inject_fault, backend) {
        (Some(f), Backend::Gpu) => Some(super::check::parse_fault(&graph, f)?),
        (Some(_), Backend::Cpu) => bail!("--inject-fault applies to the GPU backend only"),
        (None, _) => None,
    };
    let opened = backend::open(backend, &graph, &model, level, fault)?;
    let mut decoder = opened.decoder;
    if backend == Backend::Gpu {
        if args.skip_parity_gate {
            eprintln!("apr-ir: warning: --skip-parity-gate: GPU results are not verified against the CPU");
        } else if let Some(failed) = backend::parity_gate(decoder.as_mut(), &graph, &model, &prompt, 3)? {
            // Free the GPU schedule before the checker builds its own.
            drop(decoder);
            bail!("{}", gate_verdict(&graph, &model, level, fault, &prompt, &failed));
        }
        // The gate advanced the GPU's cache; generation starts over at position 0,
        // overwriting it.
    }
    let opts = GenerateOptions {
        max_tokens,
        stop: tokenizer.eos_ids(),
        sampler: SamplerConfig { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed },
    };
    let mut rows: Vec<f32> = Vec::new();
    let dump = args.dump_logits.is_some();
    let mut text = StreamDecoder::new(&tokenizer).skip_special(true);
    let mut stdout = std::io::stdout().lock();
    let start = Instant::now();
    let mut write_err = None;
    let result = generate(
        decoder.as_mut(),
        &prompt,
        &opts,
        &mut |t| {
            if let Some(piece) = text.push(t) {
                if let Err(e) = stdout.write_all(piece.as_bytes()).and_then(|()| stdout.flush()) {
                    write_err.get_or_insert(e);
                }
            }
        },
        &mut |l| {
            if dump {
                rows.extend_from_slice(l);
            }
        },
    )?;
    let tail = text.finish().unwrap_or_default();
    writeln!(stdout, "{tail}")?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(path) = &args.dump_logits {
        let cols = vocab as usize;
        npy::write_f32(path, rows.len() / cols.max(1), cols, &rows)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let summary = format!(
        "{}: {} prompt + {} generated tokens in {:.2} s ({:.1} positions/s)",
        opened.device,
        prompt.len(),
        result.tokens.len(),
        secs,
        f64::from(result.positions) / secs.max(1e-9)
    );
    tracing::info!("{summary}");
    if std::io::stderr().is_terminal() {
        eprintln!("{summary}");
    }
    Ok(())
}

/// The parity gate failed: run the checker over the gate's positions (teacher-forced with the
/// same prompt tokens, the same level and schedule) and say, on one line, which node it names.
fn gate_verdict(
    graph: &apr_ir::Graph,
    model: &Model,
    level: apr_ir::fuse::OptLevel,
    fault: Option<apr_ir_wgpu::Fault>,
    prompt: &[u32],
    failed: &backend::GateFailed,
) -> String {
    let positions = failed.pos + 1;
    let head = format!("GPU/CPU parity gate failed at position {}: {}", failed.pos, failed.why);
    let tail = "(`apr-ir check` writes the full report; --skip-parity-gate runs anyway, unverified)";
    match super::check::run_check(graph, model, model, level, fault, prompt, 0, positions) {
        Ok(r) => match r.culprit {
            Some(c) => {
                let how = if c.metrics.nonfinite > 0 {
                    format!("{} non-finite values", c.metrics.nonfinite)
                } else {
                    format!("nmse {:.3e}", c.metrics.nmse)
                };
                format!(
                    "{head}; culprit: node %{} {} ({}), cause {}, at position {} (dispatch {}, {how}) {tail}",
                    c.node,
                    c.name,
                    c.op,
                    c.cause.as_str(),
                    c.position,
                    c.dispatch
                )
            }
            None => format!("{head}; the node-by-node check over {positions} positions found no culprit {tail}"),
        },
        Err(e) => format!("{head}; localizing it failed: {e:#} {tail}"),
    }
}

/// `NAME=VALUE` of `--chat-arg`: VALUE as JSON where it parses, else as a string.
fn parse_chat_arg(s: &str) -> Result<(String, serde_json::Value), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if name.is_empty() || !name.chars().all(ident) || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("{name:?} is not a template variable name"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    Ok((name.to_string(), value))
}

/// The prompt as token ids: given ids, raw text, or text in the chat template.
fn prompt_tokens(args: &Args, model: &Model, tok: &Tokenizer) -> Result<Vec<u32>> {
    if let Some(ids) = &args.tokens {
        return Ok(ids.clone());
    }
    let text = args.prompt.as_deref().unwrap_or_default();
    let rendered = if args.chat {
        let template = model.chat_template()?.context("the model has no chat template; run without --chat")?;
        let mut messages = Vec::new();
        if let Some(sys) = &args.system {
            messages.push(Message { role: "system".into(), content: sys.clone() });
        }
        messages.push(Message { role: "user".into(), content: text.to_string() });
        template.render_with(&messages, true, &args.chat_args)?
    } else {
        text.to_string()
    };
    let mut ids = tok.encode(&rendered, true);
    if let Some(bos) = tok.bos().filter(|_| tok.add_bos()) {
        if ids.first() != Some(&bos) {
            ids.insert(0, bos);
        }
    }
    if ids.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    Ok(ids)
}
