//! The checker-facing side of a [`Schedule`]: capture mode (every group output read back,
//! intermediates poisoned first), per-group values, isolation of one group on given operands,
//! and the drill-down of a group into its covered nodes, one -O0 dispatch each (where an
//! injected fault inside a fused group is realized node by node, as the schedule does).

use super::objects::{encode, make_pipeline, read_back};
use super::{resolve, Dispatch, PieceRows, Schedule, STORAGE};
use crate::device::Gpu;
use crate::fault::{plan_nodes, POISON_BITS};
use crate::plan::{storage_of, Buf, Plan};
use crate::GpuError;
use apr_ir::group::Group;
use apr_ir::{DType, NodeId, Op};
use std::collections::{HashMap, HashSet};

/// Values read back in capture mode.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub logits: Vec<f32>,
    /// Every group output's value (row-major at the step's `ctx`); at -O0 every computed node's.
    pub values: HashMap<NodeId, Vec<f32>>,
}

/// The drill-down of one group (built on first use): its covered nodes one -O0 dispatch each,
/// into buffers of their own.
pub(super) struct Drill {
    group: usize,
    dispatches: Vec<Dispatch>,
    /// Storage node → the drill's buffer for it (a cache's is a copy of the schedule's).
    buffers: HashMap<NodeId, wgpu::Buffer>,
}

/// One value capture mode reads back: (group output, node whose buffer holds it, bytes).
pub(super) type Tap = (NodeId, NodeId, u64);

/// Capture mode.
impl Schedule {
    /// Capture mode, for the checker: decode with every group output's value read back (at -O0
    /// every computed node; at -O1 / -O2 the interior of a fused group never exists on the
    /// GPU and is not captured; outputs the rewrites proved equal read their group's buffer).
    /// Before the step, every intermediate buffer (not the KV cache) is poisoned with NaN, so a
    /// dispatch that did not write its output shows as NaN rather than as last token's value.
    /// Buffers are never reused for another value, so each value is exactly what its dispatch
    /// wrote. A `cache_write` node's value is the rows in use of its cache, as on the CPU.
    pub fn step_capture(&mut self, token: u32, pos: u32) -> Result<Captured, GpuError> {
        self.run(token, pos, true)
    }

    /// Every group output, from the buffer that holds it.
    pub(super) fn capture_taps(&self) -> Vec<Tap> {
        let max_ctx = self.graph.meta.max_ctx;
        self.materialized
            .iter()
            .filter_map(|&(id, src)| {
                let bytes = self.graph.node(src).and_then(|s| s.ty.bytes(max_ctx))?;
                Some((id, src, bytes.next_multiple_of(4)))
            })
            .collect()
    }

    /// Poison the buffers of `taps` before the step at `pos` (a cache: the row it writes).
    pub(super) fn poison_taps(&self, taps: &[Tap], pos: u32) {
        let mut poisoned = HashSet::new();
        for (id, src, size) in taps {
            let state = self.graph.node(*src).is_some_and(|n| matches!(n.op, Op::State));
            if !state && poisoned.insert(*src) {
                if let Some(b) = self.values.get(src) {
                    self.gpu.queue.write_buffer(b, 0, &poison_bytes(*size));
                }
            } else if state {
                // A cache write: the row this step writes (see `poisons_written_row`).
                if let (true, Some(n), Some(b)) =
                    (self.poisons_written_row(*src, *id), self.graph.node(*id), self.values.get(src))
                {
                    poison_row(&self.gpu, n, b, pos);
                }
            }
        }
    }

    /// Whether the row cache write `writer` writes into `state` may be poisoned before a step:
    /// not when some other node reads the cache itself (its old contents, before the write),
    /// which must see the real row.
    fn poisons_written_row(&self, state: NodeId, writer: NodeId) -> bool {
        !self
            .graph
            .nodes
            .iter()
            .any(|u| u.inputs.contains(&state) && !matches!(u.op, Op::CacheWrite { .. }) && u.id != writer)
    }

    /// The staging buffer for everything `taps` reads back this step (allocated per capture
    /// step), with the copies into it recorded on `enc`.
    pub(super) fn copy_taps(&self, enc: &mut wgpu::CommandEncoder, taps: &[Tap]) -> wgpu::Buffer {
        let total: u64 = taps.iter().map(|t| t.2).sum();
        let staging = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("capture"),
            size: total.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut offset = 0;
        for (_, src, size) in taps {
            if let Some(b) = self.values.get(src) {
                enc.copy_buffer_to_buffer(b, 0, &staging, offset, *size);
            }
            offset += size;
        }
        staging
    }

    /// Read `taps` back from `staging` (once submitted): each group output's value at `ctx`.
    pub(super) fn read_taps(
        &self,
        staging: &wgpu::Buffer,
        taps: &[Tap],
        ctx: u64,
    ) -> Result<HashMap<NodeId, Vec<f32>>, GpuError> {
        let all = read_back(&self.gpu, staging)?;
        let mut values = HashMap::new();
        let mut offset = 0usize;
        for (id, _, size) in taps {
            let words = (*size / 4) as usize;
            let raw = all.get(offset..offset + words).unwrap_or_default();
            offset += words;
            if let Some(n) = self.graph.node(*id) {
                values.insert(*id, in_use(n, raw, ctx));
            }
        }
        Ok(values)
    }
}

/// The checker's device interface: per-group values, isolation and drill-down.
impl Schedule {
    /// A capture step ([`Schedule::step_capture`]) returning each group's value, in
    /// [`Schedule::groups`] order (a cache write's: the rows in use of its cache; i32 values as
    /// their numbers, NaN bit patterns kept as they are).
    pub fn step_groups(&mut self, token: u32, pos: u32) -> Result<Vec<Vec<f32>>, GpuError> {
        let mut c = self.run(token, pos, true)?;
        let mut out = Vec::with_capacity(self.groups.len());
        for grp in &self.groups {
            let v = grp.value().ok_or_else(|| GpuError::Internal("a group without outputs".into()))?;
            let raw = c.values.remove(&v).ok_or_else(|| GpuError::Internal(format!("{v} was not captured")))?;
            out.push(self.as_numbers(v, raw));
        }
        Ok(out)
    }

    /// Run group `k` alone at `pos` (the last step's token) with its operands set to
    /// `operands` (values by operand node, as `apr_ir_check::checker::operands` lists them:
    /// leaves are the schedule's own and ignored; a view's value goes to its storage; a cache
    /// write's value is the rows in use of its cache); the value it writes.
    pub fn isolate(&mut self, k: usize, operands: &HashMap<NodeId, Vec<f32>>, pos: u32) -> Result<Vec<f32>, GpuError> {
        let grp = self.groups.get(k).cloned().ok_or_else(|| GpuError::Internal(format!("no group {k}")))?;
        let v = grp.value().ok_or_else(|| GpuError::Internal("a group without outputs".into()))?;
        let ctx = self.set_step(pos)?;
        self.write_operands(operands, ctx)?;
        let src = resolve(&self.graph, &self.alias, v);
        let buf = self.values.get(&src).ok_or_else(|| GpuError::Internal(format!("no buffer for {v}")))?.clone();
        self.poison_value(v, &buf, pos);
        let mut enc = self.encoder();
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("isolate"), timestamp_writes: None });
            for d in self.dispatches.iter().filter(|d| d.group == k) {
                encode(&mut pass, &self.pipelines, d, ctx);
            }
        }
        let mut got = self.read_nodes(enc, &[(v, buf)], ctx)?;
        Ok(got.pop().map(|(_, x)| x).unwrap_or_default())
    }

    /// Run the nodes group `k` covers one -O0 dispatch each (the fault after its node, if it is
    /// one of them) at `pos` on `operands` (as for [`Schedule::isolate`]); every covered
    /// node's value. The dispatches and buffers are made on the first call for `k`.
    pub fn drill(
        &mut self,
        k: usize,
        operands: &HashMap<NodeId, Vec<f32>>,
        pos: u32,
    ) -> Result<HashMap<NodeId, Vec<f32>>, GpuError> {
        let grp = self.groups.get(k).cloned().ok_or_else(|| GpuError::Internal(format!("no group {k}")))?;
        if self.drill.as_ref().map(|d| d.group) != Some(k) {
            self.drill = Some(self.build_drill(k, &grp)?);
        }
        let ctx = self.set_step(pos)?;
        self.write_operands(operands, ctx)?;
        let drill = self.drill.take().ok_or_else(|| GpuError::Internal("no drill".into()))?;
        // Caches start as the schedule's (the rows before `pos`); everything else as poison.
        let mut enc = self.encoder();
        for (id, b) in &drill.buffers {
            if self.graph.node(*id).is_some_and(|n| matches!(n.op, Op::State)) {
                if let Some(src) = self.values.get(id) {
                    enc.copy_buffer_to_buffer(src, 0, b, 0, src.size().min(b.size()));
                }
            }
        }
        self.gpu.queue.submit([enc.finish()]);
        for (id, b) in &drill.buffers {
            if !self.graph.node(*id).is_some_and(|n| matches!(n.op, Op::State)) {
                self.gpu.queue.write_buffer(b, 0, &poison_bytes(b.size()));
            }
        }
        let mut taps = Vec::new();
        for c in crate::fault::covers_in_order(&grp) {
            let Some(n) = self.graph.node(c) else { continue };
            if !n.op.is_compute() {
                continue;
            }
            let s = storage_of(&self.graph, c);
            if let Some(b) = drill.buffers.get(&s) {
                if matches!(n.op, Op::CacheWrite { .. }) && self.poisons_written_row(s, c) {
                    poison_row(&self.gpu, n, b, pos);
                }
                taps.push((c, b.clone()));
            }
        }
        let mut enc = self.encoder();
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("drill"), timestamp_writes: None });
            for d in &drill.dispatches {
                encode(&mut pass, &self.pipelines, d, ctx);
            }
        }
        self.drill = Some(drill);
        Ok(self.read_nodes(enc, &taps, ctx)?.into_iter().collect())
    }

    /// i32 values as their numbers (the CPU's), NaN patterns (poison) kept.
    fn as_numbers(&self, id: NodeId, mut v: Vec<f32>) -> Vec<f32> {
        if self.graph.node(id).is_some_and(|n| n.ty.dtype == DType::I32) {
            for x in &mut v {
                if !x.is_nan() {
                    *x = x.to_bits() as i32 as f32;
                }
            }
        }
        v
    }

    /// Write the step uniform for `pos` (the last step's token); the step's `ctx`.
    fn set_step(&mut self, pos: u32) -> Result<u64, GpuError> {
        let max_ctx = self.graph.meta.max_ctx;
        if u64::from(pos) >= max_ctx {
            return Err(GpuError::Position { pos, max_ctx });
        }
        let words = [pos, pos + 1, self.last_token, 0];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.gpu.queue.write_buffer(&self.step, 0, &bytes);
        Ok(u64::from(pos) + 1)
    }

    /// A command encoder with the input nodes already copied from the step uniform.
    fn encoder(&self) -> wgpu::CommandEncoder {
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("check") });
        for (id, offset) in &self.inputs {
            if let Some(b) = self.values.get(id) {
                enc.copy_buffer_to_buffer(&self.step, *offset, b, 0, 4);
            }
        }
        enc
    }

    /// Poison the buffer of `v`'s value before it is recomputed (a cache: the row at `pos`).
    fn poison_value(&self, v: NodeId, buf: &wgpu::Buffer, pos: u32) {
        let Some(n) = self.graph.node(v) else { return };
        if matches!(n.op, Op::CacheWrite { .. }) {
            poison_row(&self.gpu, n, buf, pos);
        } else {
            self.gpu.queue.write_buffer(buf, 0, &poison_bytes(buf.size()));
        }
    }

    /// Write operand values into the schedule's buffers.
    fn write_operands(&self, operands: &HashMap<NodeId, Vec<f32>>, ctx: u64) -> Result<(), GpuError> {
        for (&id, v) in operands {
            let mut base = id;
            while let Some((Op::Reshape { .. }, Some(&src))) = self.graph.node(base).map(|n| (&n.op, n.inputs.first()))
            {
                base = src;
            }
            let n = self.graph.node(base).ok_or_else(|| GpuError::Internal(format!("no node {base}")))?;
            if n.op.is_leaf() {
                continue;
            }
            let src = resolve(&self.graph, &self.alias, base);
            let buf = self.values.get(&src).ok_or_else(|| GpuError::Internal(format!("no buffer for {}", n.name)))?;
            let int = n.ty.dtype == DType::I32;
            let bytes: Vec<u8> =
                v.iter().flat_map(|&x| if int { (x as i32).to_le_bytes() } else { x.to_le_bytes() }).collect();
            if let Some((outer, full, inner)) = cache_layout(n) {
                let rows = (ctx as usize).min(full);
                if v.len() != outer * rows * inner {
                    return Err(GpuError::Internal(format!(
                        "{}: {} values for {outer}×{rows}×{inner}",
                        n.name,
                        v.len()
                    )));
                }
                for o in 0..outer {
                    let chunk = &bytes[o * rows * inner * 4..(o + 1) * rows * inner * 4];
                    if !chunk.is_empty() {
                        self.gpu.queue.write_buffer(buf, (o * full * inner * 4) as u64, chunk);
                    }
                }
            } else {
                if bytes.len() as u64 > buf.size() {
                    return Err(GpuError::Internal(format!("{}: {} values overflow its buffer", n.name, v.len())));
                }
                if !bytes.is_empty() {
                    self.gpu.queue.write_buffer(buf, 0, &bytes);
                }
            }
        }
        Ok(())
    }

    /// Finish `enc` with copies of `taps` (node, buffer holding it) and read their values.
    fn read_nodes(
        &self,
        mut enc: wgpu::CommandEncoder,
        taps: &[(NodeId, wgpu::Buffer)],
        ctx: u64,
    ) -> Result<Vec<(NodeId, Vec<f32>)>, GpuError> {
        let total: u64 = taps.iter().map(|(_, b)| b.size()).sum();
        let staging = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("check readback"),
            size: total.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut offset = 0;
        for (_, b) in taps {
            enc.copy_buffer_to_buffer(b, 0, &staging, offset, b.size());
            offset += b.size();
        }
        self.gpu.queue.submit([enc.finish()]);
        let all = read_back(&self.gpu, &staging)?;
        self.gpu.check()?;
        let mut out = Vec::with_capacity(taps.len());
        let mut at = 0usize;
        for (id, b) in taps {
            let words = (b.size() / 4) as usize;
            let raw = all.get(at..at + words).unwrap_or_default();
            at += words;
            let n = self.graph.node(*id).ok_or_else(|| GpuError::Internal(format!("no node {id}")))?;
            out.push((*id, self.as_numbers(*id, in_use(n, raw, ctx))));
        }
        Ok(out)
    }

    /// The drill-down dispatches of group `k`: its covered nodes at -O0, into buffers of
    /// their own (caches: copies), reading operands from the schedule's buffers.
    fn build_drill(&mut self, k: usize, grp: &Group) -> Result<Drill, GpuError> {
        let max_ctx = self.graph.meta.max_ctx;
        let mut buffers: HashMap<NodeId, wgpu::Buffer> = HashMap::new();
        for &c in &grp.covers {
            let Some(n) = self.graph.node(c) else { continue };
            if !n.op.is_compute() {
                continue;
            }
            let s = storage_of(&self.graph, c);
            let sn = self.graph.node(s).ok_or_else(|| GpuError::Internal(format!("no node {s}")))?;
            if buffers.contains_key(&s) || (s != c && !matches!(sn.op, Op::State)) {
                continue;
            }
            let size = sn.ty.bytes(max_ctx).ok_or(GpuError::TooLarge(u64::MAX))?.max(4).next_multiple_of(16);
            let name = sn.name.clone();
            buffers.insert(s, self.new_buffer(&name, size));
        }
        let rows =
            PieceRows(self.pieces.iter().map(|(id, l)| (*id, l.iter().map(|(a, b, _)| (*a, *b)).collect())).collect());
        let mut tables = Vec::new();
        let wf = |id| self.weight_f32.get(&id).cloned();
        let plans = plan_nodes(&self.graph, grp, self.fault, &rows, &wf, &mut tables)?;
        let mut table_bufs = Vec::new();
        for t in &tables {
            let bytes: Vec<u8> = t.iter().flat_map(|x| x.to_le_bytes()).collect();
            let b = self.new_buffer("table", (bytes.len() as u64).max(16).next_multiple_of(16));
            self.gpu.queue.write_buffer(&b, 0, &bytes);
            table_bufs.push(b);
        }
        let mut dispatches = Vec::new();
        for p in &plans {
            let pix = self.pipeline_for(p);
            let params: Vec<u8> = p.params.iter().flat_map(|w| w.to_le_bytes()).collect();
            let pbuf = self.new_buffer("params", (params.len() as u64).max(16).next_multiple_of(16));
            self.gpu.queue.write_buffer(&pbuf, 0, &params);
            let mut bufs = Vec::new();
            for b in &p.bindings {
                let buffer = match b {
                    Buf::Node(id) => {
                        buffers.get(id).or_else(|| self.values.get(&resolve(&self.graph, &self.alias, *id)))
                    }
                    Buf::Piece(id, i) => self.pieces.get(id).and_then(|l| l.get(*i)).map(|(_, _, b)| b),
                    Buf::Table(i) => table_bufs.get(*i),
                    // The drill runs one-node plans, which use no scratch.
                    Buf::Scratch(_) => None,
                }
                .ok_or_else(|| GpuError::Internal(format!("drill: no buffer for {b:?} of {}", p.node)))?;
                bufs.push(buffer.clone());
            }
            let mut entries = vec![
                wgpu::BindGroupEntry { binding: 0, resource: self.step.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: pbuf.as_entire_binding() },
            ];
            for (i, b) in bufs.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry { binding: 2 + i as u32, resource: b.as_entire_binding() });
            }
            let bind_group = self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &self.layouts[pix],
                entries: &entries,
            });
            self.counts.bind_groups += 1;
            dispatches.push(Dispatch { pipeline: pix, bind_group, grid: p.grid.clone(), group: k });
        }
        self.gpu.check()?;
        Ok(Drill { group: k, dispatches, buffers })
    }

    fn new_buffer(&mut self, label: &str, size: u64) -> wgpu::Buffer {
        self.counts.buffers += 1;
        self.gpu_bytes += size;
        self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: STORAGE,
            mapped_at_creation: false,
        })
    }

    fn pipeline_for(&mut self, p: &Plan) -> usize {
        let key = (p.family, p.dtype, p.dtype2);
        if let Some(&i) = self.pipeline_ix.get(&key) {
            return i;
        }
        let (pipe, layout) = make_pipeline(&self.gpu, p);
        self.counts.pipelines += 1;
        self.pipelines.push(pipe);
        self.layouts.push(layout);
        self.pipeline_ix.insert(key, self.pipelines.len() - 1);
        self.pipelines.len() - 1
    }
}

/// `size` bytes of [`POISON_BITS`].
fn poison_bytes(size: u64) -> Vec<u8> {
    std::iter::repeat_n(POISON_BITS.to_le_bytes(), (size / 4) as usize).flatten().collect()
}

/// A cache write's `[outer, full, inner]` (from its cache's shape), if `n` is one.
fn cache_layout(n: &apr_ir::Node) -> Option<(usize, usize, usize)> {
    let Op::CacheWrite { axis } = n.op else { return None };
    let dims: Vec<usize> = n.ty.shape.iter().map(|d| d.as_const().map(|c| c as usize)).collect::<Option<_>>()?;
    let ax = axis as usize;
    let full = *dims.get(ax)?;
    Some((dims[..ax].iter().product(), full, dims[ax + 1..].iter().product()))
}

/// Poison row `pos` of cache write `n`'s cache `buf` (the row its dispatch writes this step).
fn poison_row(gpu: &Gpu, n: &apr_ir::Node, buf: &wgpu::Buffer, pos: u32) {
    let Some((outer, full, inner)) = cache_layout(n) else { return };
    if pos as usize >= full {
        return;
    }
    let row = poison_bytes((inner * 4) as u64);
    for o in 0..outer {
        gpu.queue.write_buffer(buf, (((o * full + pos as usize) * inner) * 4) as u64, &row);
    }
}

/// The part of a node's buffer that holds its value at `ctx`: the prefix of its elements, or
/// for a cache write the rows in use along the cache axis.
fn in_use(n: &apr_ir::Node, raw: &[f32], ctx: u64) -> Vec<f32> {
    let shape: Vec<usize> = n.ty.shape.iter().map(|d| d.eval(ctx) as usize).collect();
    if let Op::CacheWrite { axis } = n.op {
        let ax = axis as usize;
        let outer: usize = shape[..ax].iter().product();
        let inner: usize = shape[ax + 1..].iter().product();
        let full = shape[ax];
        let rows = (ctx as usize).min(full);
        let mut v = Vec::with_capacity(outer * rows * inner);
        for o in 0..outer {
            let base = o * full * inner;
            v.extend_from_slice(raw.get(base..base + rows * inner).unwrap_or_default());
        }
        return v;
    }
    let count: usize = shape.iter().product();
    raw.get(..count).unwrap_or(raw).to_vec()
}
