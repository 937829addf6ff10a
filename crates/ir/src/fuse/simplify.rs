//! The algebra rules alone over a whole graph, rebuilt as a graph: [`simplify`], the
//! property tests' check of the rules' soundness.

use super::lang::{self, has_attr, Window};
use super::{const_values, rules, ITER_LIMIT, NODE_LIMIT, TIME_LIMIT};
use crate::{Graph, IrError, NodeId, Op};
use egg::{Extractor, Id, Runner};
use std::collections::{HashMap, HashSet};

/// The algebra rules alone, applied to the whole graph and extracted as the smallest
/// equivalent graph (new terms allowed). Used to test the rules' soundness: interpreting
/// `g` and `simplify(g)` must agree. Outputs keep their names; nodes are renamed after an
/// original node of their e-class where there is one.
pub fn simplify(g: &Graph) -> Result<Graph, IrError> {
    let all: Vec<NodeId> = g.nodes.iter().map(|n| n.id).collect();
    let window = Window::build(g, &all);
    let consts = const_values(g);
    let runner = Runner::default()
        .with_egraph(window.egraph)
        .with_iter_limit(ITER_LIMIT)
        .with_node_limit(NODE_LIMIT)
        .with_time_limit(TIME_LIMIT)
        .run(&rules::algebra(&consts));
    let eg = &runner.egraph;
    let extractor = Extractor::new(eg, egg::AstSize);
    let name_of: HashMap<Id, String> = {
        let mut m: HashMap<Id, String> = HashMap::new();
        for (id, _) in window.members.iter().rev() {
            if let (Some(&c), Some(n)) = (window.class.get(id), g.node(*id)) {
                m.insert(eg.find(c), n.name.clone());
            }
        }
        m
    };
    let mut b = crate::GraphBuilder::new(g.meta.clone());
    let mut built: HashMap<Id, NodeId> = HashMap::new();
    let mut used_names: HashSet<String> = HashSet::new();
    let mut roots: Vec<Id> = g.outputs.iter().filter_map(|o| window.class.get(&o.node).map(|&c| eg.find(c))).collect();
    roots.extend(
        g.nodes
            .iter()
            .filter(|n| matches!(n.op, Op::CacheWrite { .. }))
            .filter_map(|n| window.class.get(&n.id))
            .map(|&c| eg.find(c)),
    );
    // Post-order without recursion: a class is built once all its operands are.
    for root in roots {
        let mut stack: Vec<(Id, bool)> = vec![(root, false)];
        while let Some((c, expanded)) = stack.pop() {
            if built.contains_key(&c) {
                continue;
            }
            let best = extractor.find_best_node(c).clone();
            if best.children.is_empty() {
                let leaf = lang::leaf_node(best.op)
                    .and_then(|id| g.node(id))
                    .ok_or_else(|| IrError::Graph(format!("simplify: unexpected leaf {}", best.op)))?;
                let id = b.leaf(leaf.name.clone(), leaf.op.clone(), leaf.ty.clone())?;
                built.insert(c, id);
                continue;
            }
            let is_attr =
                |x: Id| eg[x].nodes.iter().any(|n| n.children.is_empty() && n.op.as_str().starts_with("attr:"));
            let skip = usize::from(has_attr(&best, is_attr));
            let operands: Vec<Id> = best.children.iter().skip(skip).map(|&x| eg.find(x)).collect();
            if !expanded {
                stack.push((c, true));
                stack.extend(operands.iter().filter(|x| !built.contains_key(x)).map(|&x| (x, false)));
                continue;
            }
            let attr_of = |x: Id| eg[x].nodes.iter().find(|n| n.children.is_empty()).and_then(|n| lang::attr_op(n.op));
            let op = lang::decode_op(&best, attr_of)
                .ok_or_else(|| IrError::Graph(format!("simplify: cannot rebuild {}", best.op)))?;
            let inputs: Vec<NodeId> = operands
                .iter()
                .map(|x| built.get(x).copied().ok_or_else(|| IrError::Graph("simplify: operand cycle".into())))
                .collect::<Result<_, _>>()?;
            let base = name_of.get(&c).cloned().unwrap_or_else(|| format!("rw.{}", usize::from(c)));
            let name = if used_names.insert(base.clone()) { base } else { format!("{base}.rw{}", usize::from(c)) };
            used_names.insert(name.clone());
            let id = b.push(name, op, &inputs)?;
            built.insert(c, id);
        }
    }
    for o in &g.outputs {
        let c = window.class.get(&o.node).map(|&c| eg.find(c));
        if let Some(id) = c.and_then(|c| built.get(&c)) {
            b.output(o.name.clone(), *id);
        }
    }
    b.finish()
}
