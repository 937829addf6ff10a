//! The rewrite rules, by topic. Each rule's comment is the identity it applies.
//!
//! `algebra` rules are equalities between IR terms; they normalise forms so the fusion
//! patterns match whatever order a lowering wrote operands in, and the extractor never keeps
//! a term that is not in the original graph (a group must cover IR nodes). `fusion_o1` rules
//! recognise regions that one row-local kernel computes (norm, softmax, RoPE, SwiGLU);
//! `fusion_o2` rules go further: matrix-vector products with their epilogues, the two
//! projections of a SwiGLU, one decode step of attention straight from the caches, RoPE
//! with its cache write. A fused symbol `F.<kind>` has the kernel's operands as children.

use super::lang::{attr_op, is_weight};
use crate::{Dim, Op};
use egg::{rewrite as rw, EGraph, Id, Rewrite, Subst, SymbolLang, Var};
use std::collections::HashMap;
use std::sync::Arc;

type EG = EGraph<SymbolLang, ()>;
type Rule = Rewrite<SymbolLang, ()>;

/// The values of the scalar constants, by leaf symbol (`c:4`).
pub type Consts = Arc<HashMap<String, f64>>;

fn var(s: &str) -> Var {
    // Only called with the literal variable names below, which all parse.
    s.parse().unwrap_or(Var::from(0u32))
}

fn leaves(eg: &EG, id: Id) -> impl Iterator<Item = &SymbolLang> {
    eg[id].nodes.iter().filter(|n| n.children.is_empty())
}

/// `?v` is bound to a weight of the model.
fn weight(v: &'static str) -> impl Fn(&mut EG, Id, &Subst) -> bool {
    let v = var(v);
    move |eg, _, s| leaves(eg, s[v]).any(|n| is_weight(n.op))
}

/// `?v` is bound to a scalar constant (equal to `value`, when given).
fn constant(consts: &Consts, v: &'static str, value: Option<f64>) -> impl Fn(&mut EG, Id, &Subst) -> bool {
    let (v, consts) = (var(v), consts.clone());
    move |eg, _, s| {
        leaves(eg, s[v]).any(|n| consts.get(n.op.as_str()).is_some_and(|&c| value.is_none_or(|want| c == want)))
    }
}

/// `?v` is the attribute of a slice of the first `ctx` positions.
fn prefix_slice(v: &'static str) -> impl Fn(&mut EG, Id, &Subst) -> bool {
    let v = var(v);
    move |eg, _, s| {
        leaves(eg, s[v]).any(|n| matches!(attr_op(n.op), Some(Op::Slice { start: 0, len: Dim::Sym(_), .. })))
    }
}

fn both(
    a: impl Fn(&mut EG, Id, &Subst) -> bool,
    b: impl Fn(&mut EG, Id, &Subst) -> bool,
) -> impl Fn(&mut EG, Id, &Subst) -> bool {
    move |eg, id, s| a(eg, id, s) && b(eg, id, s)
}

/// Identities that normalise terms.
pub fn algebra(consts: &Consts) -> Vec<Rule> {
    vec![
        // a + b = b + a
        rw!("add-commute"; "(add ?a ?b)" => "(add ?b ?a)"),
        // a · b = b · a
        rw!("mul-commute"; "(mul ?a ?b)" => "(mul ?b ?a)"),
        // −(−x) = x
        rw!("neg-neg"; "(neg (neg ?x))" => "?x"),
        // a − (−b) = a + b
        rw!("sub-neg"; "(sub ?a (neg ?b))" => "(add ?a ?b)"),
        // reshape(reshape(x, t), s) = reshape(x, s): a reshape keeps only its final shape
        rw!("reshape-reshape"; "(reshape ?s (reshape ?t ?x))" => "(reshape ?s ?x)"),
        // x · 1 = x (constants are scalars, so the shape is x's)
        rw!("mul-one"; "(mul ?x ?c)" => "?x" if constant(consts, "?c", Some(1.0))),
        // x / 1 = x
        rw!("div-one"; "(div ?x ?c)" => "?x" if constant(consts, "?c", Some(1.0))),
        // x + 0 = x
        rw!("add-zero"; "(add ?x ?c)" => "?x" if constant(consts, "?c", Some(0.0))),
        // x − 0 = x
        rw!("sub-zero"; "(sub ?x ?c)" => "?x" if constant(consts, "?c", Some(0.0))),
        // 1 / √x = rsqrt(x)
        rw!("recip-sqrt"; "(div ?c (sqrt ?x))" => "(rsqrt ?x)" if constant(consts, "?c", Some(1.0))),
    ]
}

/// Row-local regions: one workgroup per row of the last axis (per head, for a norm and the RoPE
/// after it).
pub fn fusion_o1(consts: &Consts) -> Vec<Rule> {
    vec![
        // RMSNorm: x · rsqrt(mean(x²) + ε) · w
        rw!("rms-norm";
            "(mul (mul ?x (rsqrt (add (reduce_mean.last ?ax (mul ?x ?x)) ?eps))) ?w)"
            => "(F.rms_norm ?x ?eps ?w)"
            if both(constant(consts, "?eps", None), weight("?w"))),
        // softmax: exp(s − max s) / Σ exp(s − max s)
        rw!("softmax";
            "(div (exp (sub ?s (reduce_max.last ?m ?s))) (reduce_sum.last ?r (exp (sub ?s (reduce_max.last ?m ?s)))))"
            => "(F.softmax ?s)"),
        // softmax of a scaled input: softmax(x · c)
        rw!("softmax-scaled"; "(F.softmax (mul ?x ?c))" => "(F.softmax_scaled ?x ?c)" if constant(consts, "?c", None)),
        // RoPE: x · cos + rotate_half(x) · sin
        rw!("rope"; "(add (mul ?x ?cos) (mul (rope_rotate ?a ?x) ?sin))" => "(F.rope ?x ?cos ?sin)"),
        // SwiGLU: silu(g) · u = g · σ(g) · u
        rw!("swiglu"; "(mul (mul ?g (sigmoid ?g)) ?u)" => "(F.swiglu ?g ?u)"),
        // per-head RMSNorm then RoPE (Qwen3's q/k norms): rope(rms_norm(x)), both per row
        rw!("norm-rope"; "(F.rope (F.rms_norm ?x ?eps ?w) ?cos ?sin)" => "(F.norm_rope ?x ?eps ?w ?cos ?sin)"),
    ]
}

/// Matrix-vector products with what follows them (an addend, a SwiGLU, a cache write),
/// attention, cache writes.
pub fn fusion_o2() -> Vec<Rule> {
    vec![
        // x·Wᵀ + b: the bias or residual added as the product's epilogue
        rw!("matvec-add"; "(add (matmul.t ?x ?w) ?b)" => "(F.matvec_add ?x ?w ?b)" if weight("?w")),
        // silu(x·Gᵀ) · (x·Uᵀ): both projections of one input in one pass over x
        rw!("matvec-swiglu";
            "(F.swiglu (matmul.t ?x ?g) (matmul.t ?x ?u))" => "(F.matvec_swiglu ?x ?g ?u)"
            if both(weight("?g"), weight("?u"))),
        // softmax(q·K[:ctx]ᵀ · c) · V[:ctx]: one decode step of attention over the caches
        rw!("attention";
            "(matmul.n (F.softmax_scaled (matmul.t ?q (slice ?sk ?k)) ?c) (slice ?sv ?v))"
            => "(F.attention ?q ?k ?v ?c)"
            if both(prefix_slice("?sk"), prefix_slice("?sv"))),
        // cache_write(S, rope(x), p): rotate and store in one pass
        rw!("rope-cache-write";
            "(cache_write ?ax ?cache (F.rope ?x ?cos ?sin) ?p)" => "(F.rope_cache_write ?cache ?x ?cos ?sin ?p)"),
        // cache_write(S, rope(rms_norm(x)), p): a normed key rotated and stored in one pass
        rw!("norm-rope-cache-write";
            "(cache_write ?ax ?cache (F.norm_rope ?x ?eps ?w ?cos ?sin) ?p)"
            => "(F.norm_rope_cache_write ?cache ?x ?eps ?w ?cos ?sin ?p)"),
        // cache_write(S, reshape(x·Wᵀ + b), p): a value projection stored as it is computed
        rw!("matvec-add-cache-write";
            "(cache_write ?ax ?cache (reshape ?s (F.matvec_add ?x ?w ?b)) ?p)"
            => "(F.matvec_add_cache_write ?cache ?x ?w ?b ?p)"),
        // cache_write(S, reshape(x·Wᵀ), p): the same without a bias
        rw!("matvec-cache-write";
            "(cache_write ?ax ?cache (reshape ?s (matmul.t ?x ?w)) ?p)" => "(F.matvec_cache_write ?cache ?x ?w ?p)"
            if weight("?w")),
    ]
}
