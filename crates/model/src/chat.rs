//! The chat template a model ships with, rendered the way `transformers` renders it.
//!
//! A template is Jinja source from GGUF `tokenizer.chat_template` or from an HF directory
//! (`chat_template.jinja`, else `tokenizer_config.json`'s `chat_template`: a string, or a list
//! of `{name, template}` of which `default` is used). It is rendered with `minijinja` set up as
//! `transformers`' `apply_chat_template` sets up Jinja2: `trim_blocks` and `lstrip_blocks` on,
//! loop controls (`break`/`continue`), Python string/dict/list methods (`.strip()`,
//! `.startswith()`, `.items()`, … through `minijinja-contrib`'s pycompat), `raise_exception(msg)`,
//! `strftime_now(fmt)` and a `tojson` filter that writes what Python's
//! `json.dumps(ensure_ascii=False)` writes (`indent`, `separators`, `sort_keys` accepted). The
//! context holds `messages` (each `{role, content}`), `add_generation_prompt`, `bos_token`,
//! `eos_token` (the texts of the model's bos/eos tokens, or empty), and `tools`/`documents` set
//! to none, as `transformers` passes them when there are none.
//!
//! Differences from `transformers`: `strftime_now` uses UTC, not local time; Jinja extensions
//! beyond loop controls (such as `{% generation %}`) are syntax errors; tools and documents
//! cannot be passed. A model without a template gives `Ok(None)`: the caller then uses the raw
//! prompt text (no roles, no markers).

use crate::gguf::{GgufError, Metadata};
use crate::tokenizer::hf::{config_path, read_json, read_optional_json, token_text};
use crate::tokenizer::TokenizerError;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Kwargs;
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde_json::Value as Json;
use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The GGUF key holding the chat template.
pub const GGUF_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
/// The file `transformers` writes a chat template to (it wins over `tokenizer_config.json`).
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, …
    pub role: String,
    /// The turn's text.
    pub content: String,
}

impl Message {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message { role: role.into(), content: content.into() }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new("assistant", content)
    }
}

/// What went wrong loading or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Reading `tokenizer_config.json` or `chat_template.jinja`.
    #[error(transparent)]
    Files(#[from] TokenizerError),
    /// The template does not parse.
    #[error("chat template does not parse: {0}")]
    Syntax(String),
    /// Rendering failed (including the template's own `raise_exception`).
    #[error("chat template failed: {0}")]
    Render(String),
}

const NAME: &str = "chat_template";

/// A parsed chat template with the bos/eos texts it may use.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Parses `source`; `bos_token`/`eos_token` are the texts the template sees.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<ChatTemplate, ChatError> {
        let source = source.into();
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.clone()).map_err(|e| ChatError::Syntax(describe(&e)))?;
        Ok(ChatTemplate { env, source, bos_token: bos_token.into(), eos_token: eos_token.into() })
    }

    /// The template in a GGUF file, with the texts of its bos/eos tokens; `None` if it has none.
    pub fn from_gguf(meta: &Metadata) -> Result<Option<ChatTemplate>, ChatError> {
        let Some(source) = meta.opt_str(GGUF_CHAT_TEMPLATE)? else { return Ok(None) };
        let token = |key: &str| -> Result<String, ChatError> {
            let Some(id) = meta.opt_as::<i64>(key)? else { return Ok(String::new()) };
            let tokens = meta.get_str_array("tokenizer.ggml.tokens")?;
            Ok(usize::try_from(id).ok().and_then(|i| tokens.get(i)).cloned().unwrap_or_default())
        };
        let bos = token("tokenizer.ggml.bos_token_id")?;
        let eos = token("tokenizer.ggml.eos_token_id")?;
        ChatTemplate::new(source, bos, eos).map(Some)
    }

    /// The template of an HF directory (`chat_template.jinja`, else `tokenizer_config.json`),
    /// with `tokenizer_config.json`'s `bos_token`/`eos_token`; `None` if it has none.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Option<ChatTemplate>, ChatError> {
        let dir = dir.as_ref();
        let config = read_optional_json(&config_path(dir))?;
        let jinja_path = dir.join(CHAT_TEMPLATE_FILE);
        let source = if jinja_path.is_file() {
            Some(
                std::fs::read_to_string(&jinja_path)
                    .map_err(|source| TokenizerError::Io { path: jinja_path.clone(), source })?,
            )
        } else {
            config.as_ref().and_then(|c| c.get("chat_template")).and_then(template_from_config)
        };
        let Some(source) = source else { return Ok(None) };
        let text = |k: &str| token_text(config.as_ref().and_then(|c| c.get(k))).unwrap_or_default().to_owned();
        ChatTemplate::new(source, text("bos_token"), text("eos_token")).map(Some)
    }

    /// Reads a template from any JSON file with a `chat_template` key (for tools and tests).
    pub fn from_config_file(path: &Path) -> Result<Option<ChatTemplate>, ChatError> {
        let config = read_json(path)?;
        let Some(source) = config.get("chat_template").and_then(template_from_config) else { return Ok(None) };
        let text = |k: &str| token_text(config.get(k)).unwrap_or_default().to_owned();
        ChatTemplate::new(source, text("bos_token"), text("eos_token")).map(Some)
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text the template sees as `bos_token`.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The text the template sees as `eos_token`.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins. Encode the result with `parse_special` on, and without adding a BOS when
    /// the template writes `bos_token` itself.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatError> {
        self.render_with(messages, add_generation_prompt, &[])
    }

    /// [`ChatTemplate::render`] with extra template variables, as `transformers`'
    /// `apply_chat_template(..., **kwargs)` passes them (Qwen3's `enable_thinking=False`): each
    /// `(name, value)` is visible to the template under its name, and replaces a variable of
    /// the same name.
    pub fn render_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        vars: &[(String, Json)],
    ) -> Result<String, ChatError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())]))
            .collect();
        let mut ctx: Vec<(String, Value)> = vec![
            ("messages".into(), Value::from(messages)),
            ("add_generation_prompt".into(), Value::from(add_generation_prompt)),
            ("bos_token".into(), Value::from(self.bos_token.as_str())),
            ("eos_token".into(), Value::from(self.eos_token.as_str())),
            ("tools".into(), Value::from(())),
            ("documents".into(), Value::from(())),
        ];
        for (name, value) in vars {
            ctx.retain(|(n, _)| n != name);
            ctx.push((name.clone(), Value::from(minijinja::value::Serde(value))));
        }
        let ctx = Value::from_pairs(ctx);
        let template = self.env.get_template(NAME).map_err(|e| ChatError::Render(describe(&e)))?;
        template.render(ctx).map_err(|e| ChatError::Render(describe(&e)))
    }
}

/// `chat_template` in a config: a string, or `[{name, template}]` (the `default` one, else the
/// first).
fn template_from_config(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => {
            let named = |n: &str| list.iter().find(|t| t.get("name").and_then(Json::as_str) == Some(n));
            let t = named("default").or_else(|| list.first())?;
            t.get("template").and_then(Json::as_str).map(str::to_owned)
        }
        _ => None,
    }
}

/// An error with its detail and location on one line.
fn describe(e: &JinjaError) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn raise_exception(message: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=…, separators=…, sort_keys=…)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(usize::try_from(v)?),
    };
    let (item, key) = match separators {
        Some(seps) if !seps.is_none() && !seps.is_undefined() => {
            let mut it = seps.try_iter()?;
            let mut next = || it.next().and_then(|v| v.as_str().map(str::to_owned));
            match (next(), next()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(JinjaError::new(ErrorKind::InvalidOperation, "separators must be two strings")),
            }
        }
        _ => ((if indent.is_some() { "," } else { ", " }).to_owned(), ": ".to_owned()),
    };
    let json = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, format!("cannot serialize to JSON: {e}")))?;
    let mut out = String::new();
    let style = JsonStyle { indent, item: &item, key: &key, sort: sort_keys.unwrap_or(false) };
    write_json(&json, &style, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

struct JsonStyle<'a> {
    indent: Option<usize>,
    item: &'a str,
    key: &'a str,
    sort: bool,
}

fn write_json(v: &Json, style: &JsonStyle<'_>, level: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = style.indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    match v {
        Json::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(style.item);
                }
                newline(out, level + 1);
                write_json(x, style, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Json::Object(map) if !map.is_empty() => {
            let mut entries: Vec<(&String, &Json)> = map.iter().collect();
            if style.sort {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(style.item);
                }
                newline(out, level + 1);
                out.push_str(&Json::String(k.clone()).to_string());
                out.push_str(style.key);
                write_json(x, style, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Python's `datetime.now().strftime(fmt)`, in UTC, for the common directives (`%Y %y %m %d
/// %e %H %I %M %S %p %j %a %A %b %B %h %%`); others are kept as written.
fn strftime_now(fmt: String) -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format_time(secs, &fmt)
}

fn format_time(unix_secs: u64, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let day = doy_mar - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let before = cumulative.get((month - 1) as usize).copied().unwrap_or(0);
    let yday = before + day + u64::from(leap && month > 2);
    let weekday = ((days + 4) % 7) as usize; // 1970-01-01 was a Thursday
    let month_name = MONTHS.get((month - 1) as usize).copied().unwrap_or("");
    let day_name = DAYS.get(weekday).copied().unwrap_or("");
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{hour12:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('a') => out.push_str(day_name.get(..3).unwrap_or("")),
            Some('A') => out.push_str(day_name),
            Some('b' | 'h') => out.push_str(month_name.get(..3).unwrap_or("")),
            Some('B') => out.push_str(month_name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_matches_known_dates() {
        // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
        let t = 1_721_999_109;
        assert_eq!(format_time(t, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(format_time(t, "%A %B %e %H:%M:%S %I%p %j %y %%"), "Friday July 26 13:05:09 01PM 208 24 %");
        assert_eq!(format_time(0, "%Y-%m-%d %a"), "1970-01-01 Thu");
        assert_eq!(format_time(951_782_400, "%Y-%m-%d %j"), "2000-02-29 060");
    }

    #[test]
    fn tojson_writes_what_python_writes() {
        let t = ChatTemplate::new(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(separators=[',', ':'], sort_keys=true) }}",
            "",
            "",
        )
        .unwrap();
        let x = Value::from_pairs([
            ("b", Value::from(vec![Value::from(1), Value::from("é<\"\n")])),
            ("a", Value::from_pairs([("k", Value::from(()))])),
        ]);
        let out = t.env.render_str(t.source(), Value::from_pairs([("x", x)])).unwrap();
        assert_eq!(
            out,
            "{\"b\": [1, \"é<\\\"\\n\"], \"a\": {\"k\": null}}|{\n  \"b\": [\n    1,\n    \"é<\\\"\\n\"\n  ],\n  \"a\": {\n    \"k\": null\n  }\n}|{\"a\":{\"k\":null},\"b\":[1,\"é<\\\"\\n\"]}"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("no system role"), "{err}");
    }
}
