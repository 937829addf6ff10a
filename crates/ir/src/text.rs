//! The human text form. It round-trips exactly: `parse(print(g)) == g`.
//!
//! ```text
//! graph {"name":"tiny","arch":"qwen2","max_ctx":512}
//! %0 = input{kind="token"}() : i32[1] "token"
//! %1 = weight{tensor="token_embd.weight"}() : q8_0[512,256] "token_embd.weight"
//! %2 = gather(%1, %0) : f32[1,256] "inp_embd"
//! %3 = reduce_mean{axis=1}(%2) : f32[1,1] "blk.0.attn_norm.mean"
//! output "logits" = %3
//! ```
//!
//! The header carries the graph metadata as one line of JSON. Each node line is
//! `%ID = OP{ATTRS}(OPERANDS) : TYPE "NAME"`, where attribute values are JSON values, so the
//! attribute set of every op comes from its serde form and needs no per-op code here.
//! Lines starting with `#` are comments.

use crate::{DType, Dim, Graph, GraphMeta, IrError, Node, NodeId, Op, Output, TensorType};
use serde_json::{Map, Value};
use std::fmt::Write as _;

impl Graph {
    /// Print the text form.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let meta = serde_json::to_string(&self.meta).unwrap_or_default();
        let _ = writeln!(s, "graph {meta}");
        for n in &self.nodes {
            let _ = writeln!(s, "{}", node_line(n));
        }
        for o in &self.outputs {
            let _ = writeln!(s, "output {} = {}", quote(&o.name), o.node);
        }
        s
    }

    /// Parse the text form and verify the graph.
    pub fn from_text(text: &str) -> Result<Graph, IrError> {
        let mut meta: Option<GraphMeta> = None;
        let mut nodes = Vec::new();
        let mut outputs = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| IrError::Parse { line: line_no, reason };
            if let Some(rest) = line.strip_prefix("graph ") {
                if meta.is_some() {
                    return Err(err("second graph header".into()));
                }
                meta = Some(serde_json::from_str(rest).map_err(|e| err(format!("bad graph header: {e}")))?);
            } else if let Some(rest) = line.strip_prefix("output ") {
                let mut c = Cursor::new(rest);
                let name = c.json_string().map_err(err)?;
                c.expect("=").map_err(err)?;
                let node = c.node_id().map_err(err)?;
                c.end().map_err(err)?;
                outputs.push(Output { name, node });
            } else if line.starts_with('%') {
                nodes.push(parse_node(line).map_err(err)?);
            } else {
                return Err(err(format!("expected `graph`, `output` or a node, got {line:?}")));
            }
        }
        let meta = meta.ok_or(IrError::Parse { line: 1, reason: "missing `graph` header".into() })?;
        let g = Graph { meta, nodes, outputs };
        g.verify()?;
        Ok(g)
    }
}

/// One node as a line of the text form.
pub fn node_line(n: &Node) -> String {
    let mut s = format!("{} = {}", n.id, n.op.name());
    if let Value::Object(attrs) = op_attrs(&n.op) {
        if !attrs.is_empty() {
            s.push('{');
            for (k, (key, v)) in attrs.iter().enumerate() {
                if k > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{key}={}", serde_json::to_string(v).unwrap_or_default());
            }
            s.push('}');
        }
    }
    let args: Vec<String> = n.inputs.iter().map(NodeId::to_string).collect();
    let _ = write!(s, "({}) : {} {}", args.join(", "), n.ty, quote(&n.name));
    s
}

/// The op's attributes as a JSON object (`Null` for ops without attributes).
fn op_attrs(op: &Op) -> Value {
    match serde_json::to_value(op) {
        Ok(Value::Object(mut m)) => m.remove("attrs").unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn parse_node(line: &str) -> Result<Node, String> {
    let mut c = Cursor::new(line);
    let id = c.node_id()?;
    c.expect("=")?;
    let op_name = c.ident()?;
    let mut attrs = Map::new();
    if c.eat("{") && !c.eat("}") {
        loop {
            let key = c.ident()?;
            c.expect("=")?;
            attrs.insert(key, c.json_value()?);
            if c.eat("}") {
                break;
            }
            c.expect(",")?;
        }
    }
    let mut tagged = Map::new();
    tagged.insert("op".into(), Value::String(op_name.clone()));
    if !attrs.is_empty() {
        tagged.insert("attrs".into(), Value::Object(attrs));
    }
    let op: Op = serde_json::from_value(Value::Object(tagged)).map_err(|e| format!("bad op {op_name}: {e}"))?;
    c.expect("(")?;
    let mut inputs = Vec::new();
    if !c.eat(")") {
        loop {
            inputs.push(c.node_id()?);
            if c.eat(")") {
                break;
            }
            c.expect(",")?;
        }
    }
    c.expect(":")?;
    let ty = c.tensor_type()?;
    let name = c.json_string()?;
    c.end()?;
    Ok(Node { id, name, op, inputs, ty })
}

/// A tiny scanner over one line.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Cursor<'a> {
        Cursor { rest: s }
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        match self.rest.strip_prefix(tok) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, tok: &str) -> Result<(), String> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(format!("expected `{tok}` at {:?}", self.snippet()))
        }
    }

    fn end(&mut self) -> Result<(), String> {
        self.skip_ws();
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected trailing text {:?}", self.snippet()))
        }
    }

    fn snippet(&self) -> String {
        self.rest.chars().take(24).collect()
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        self.skip_ws();
        let end = self.rest.find(|c: char| !f(c)).unwrap_or(self.rest.len());
        let (head, tail) = self.rest.split_at(end);
        self.rest = tail;
        head
    }

    fn ident(&mut self) -> Result<String, String> {
        let s = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        if s.is_empty() {
            return Err(format!("expected a name at {:?}", self.snippet()));
        }
        Ok(s.to_string())
    }

    fn number(&mut self) -> Result<u64, String> {
        let s = self.take_while(|c| c.is_ascii_digit());
        s.parse().map_err(|_| format!("expected a number at {:?}", self.snippet()))
    }

    fn node_id(&mut self) -> Result<NodeId, String> {
        self.expect("%")?;
        let n = self.number()?;
        u32::try_from(n).map(NodeId).map_err(|_| format!("node id {n} too large"))
    }

    fn json_value(&mut self) -> Result<Value, String> {
        self.skip_ws();
        let mut stream = serde_json::Deserializer::from_str(self.rest).into_iter::<Value>();
        let v = match stream.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(format!("bad attribute value: {e}")),
            None => return Err("missing attribute value".into()),
        };
        let used = stream.byte_offset();
        self.rest = self.rest.get(used..).unwrap_or("");
        Ok(v)
    }

    fn json_string(&mut self) -> Result<String, String> {
        match self.json_value()? {
            Value::String(s) => Ok(s),
            other => Err(format!("expected a quoted string, got {other}")),
        }
    }

    fn tensor_type(&mut self) -> Result<TensorType, String> {
        let name = self.ident()?;
        let dtype = DType::from_name(&name).ok_or_else(|| format!("unknown dtype {name:?}"))?;
        self.expect("[")?;
        let mut shape = Vec::new();
        if !self.eat("]") {
            loop {
                if self.eat("ctx") {
                    shape.push(Dim::CTX);
                } else {
                    shape.push(Dim::Const(self.number()?));
                }
                if self.eat("]") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(TensorType { dtype, shape })
    }
}
