//! The manual-graph schedule: buffers, pipelines, bind groups and the dispatch list are built
//! once; per token only the 16-byte step uniform is written, every dispatch is encoded into
//! one compute pass, and the command buffer is submitted once.
//!
//! A schedule runs the dispatch groups of `apr_ir::fuse` at some level (-O0: one per compute
//! node): one dispatch per group (per weight piece where a weight is split across bindings),
//! one buffer per group output (the interior of a fused group is never materialized; outputs
//! the rewrites proved equal share their group's buffer).

use crate::device::Gpu;
use crate::fault::{expands, plan_faulty_group, plan_nodes, Fault, POISON_BITS};
use crate::kernels::{fused_source, native_f16, source_for, Family};
use crate::plan::{storage_of, Buf, Grid, Pieces, Plan};
use crate::GpuError;
use apr_ir::fuse::OptLevel;
use apr_ir::group::Group;
use apr_ir::{DType, Graph, InputKind, NodeId, Op};
use std::collections::{HashMap, HashSet};

/// Where weight bytes come from.
pub trait WeightBytes {
    fn bytes(&self, tensor: &str) -> Result<&[u8], String>;
}

impl WeightBytes for apr_ir_model::Model {
    fn bytes(&self, tensor: &str) -> Result<&[u8], String> {
        self.tensor_bytes(tensor).map_err(|e| e.to_string())
    }
}

/// Counts of GPU objects, to check that decoding creates none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectCounts {
    pub buffers: u64,
    pub pipelines: u64,
    pub bind_groups: u64,
}

struct Dispatch {
    pipeline: usize,
    bind_group: wgpu::BindGroup,
    grid: Grid,
    /// Index of the group (in [`Schedule::groups`] order) it belongs to.
    group: usize,
}

/// Pipeline cache key: family and the dtypes it is specialized for.
type PipelineKey = (Family, Option<DType>, Option<DType>);

/// The drill-down of one group (built on first use): its covered nodes one -O0 dispatch each,
/// into buffers of their own.
struct Drill {
    group: usize,
    dispatches: Vec<Dispatch>,
    /// Storage node → the drill's buffer for it (a cache's is a copy of the schedule's).
    buffers: HashMap<NodeId, wgpu::Buffer>,
}

/// A graph compiled for one device and one set of weights.
pub struct Schedule {
    gpu: Gpu,
    graph: Graph,
    step: wgpu::Buffer,
    values: HashMap<NodeId, wgpu::Buffer>,
    pipelines: Vec<wgpu::ComputePipeline>,
    dispatches: Vec<Dispatch>,
    /// (input node buffer, byte offset of its word in the step uniform)
    inputs: Vec<(NodeId, u64)>,
    logits: Option<(NodeId, u64, wgpu::Buffer)>,
    counts: ObjectCounts,
    /// Pipelines that read F16 weights as `f16` storage (the `SHADER_F16` path).
    f16_pipelines: usize,
    /// The dispatch groups, in order, and the level they were made at.
    groups: Vec<Group>,
    level: OptLevel,
    /// Every group output and the node whose buffer holds its value, in group order.
    materialized: Vec<(NodeId, NodeId)>,
    /// Bytes of every buffer allocated.
    pub gpu_bytes: u64,
    /// Outputs the rewrites proved equal → their group's first output.
    alias: HashMap<NodeId, NodeId>,
    /// The injected fault, if any.
    fault: Option<Fault>,
    /// The token of the last step (isolation and drill-down run at its position).
    last_token: u32,
    pipeline_ix: HashMap<PipelineKey, usize>,
    layouts: Vec<wgpu::BindGroupLayout>,
    pieces: HashMap<NodeId, Vec<(u64, u64, wgpu::Buffer)>>,
    weight_f32: HashMap<NodeId, Vec<f32>>,
    drill: Option<Drill>,
}

struct PieceRows(HashMap<NodeId, Vec<(u64, u64)>>);

impl Pieces for PieceRows {
    fn pieces(&self, id: NodeId) -> Vec<(u64, u64)> {
        self.0.get(&id).cloned().unwrap_or_default()
    }
}

const STORAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_DST).union(wgpu::BufferUsages::COPY_SRC);

impl Schedule {
    /// The -O0 schedule (one dispatch per compute node): [`Schedule::build_fused`] at
    /// [`OptLevel::O0`].
    pub fn build(gpu: Gpu, graph: &Graph, weights: &dyn WeightBytes) -> Result<Schedule, GpuError> {
        Schedule::build_fused(gpu, graph, weights, OptLevel::O0)
    }

    /// Fuse `graph` at `level` (`apr_ir::fuse::fuse`) and build the schedule of its groups.
    pub fn build_fused(
        gpu: Gpu,
        graph: &Graph,
        weights: &dyn WeightBytes,
        level: OptLevel,
    ) -> Result<Schedule, GpuError> {
        let (groups, _) = apr_ir::fuse::fuse(graph, level)?;
        Schedule::build_groups(gpu, graph, weights, &groups, level)
    }

    /// Upload the weights, allocate a buffer per group output, compile every kernel and record
    /// the dispatch list of `groups` (which must cover every compute node once: checked; they
    /// are dispatched in dependency order, their own order wherever it is one). `level` chooses
    /// kernels for one-node groups ([`crate::plan::plan_group`]).
    pub fn build_groups(
        gpu: Gpu,
        graph: &Graph,
        weights: &dyn WeightBytes,
        groups: &[Group],
        level: OptLevel,
    ) -> Result<Schedule, GpuError> {
        Schedule::build_checked(gpu, graph, weights, groups, level, None)
    }

    /// [`Schedule::build_groups`] with `fault` injected (`None`: the same schedule). The fault
    /// is invisible to callers: [`Schedule::groups`] is unchanged, and every value read back
    /// is what a device with that one fault computes (see [`crate::fault`]).
    pub fn build_checked(
        gpu: Gpu,
        graph: &Graph,
        weights: &dyn WeightBytes,
        groups: &[Group],
        level: OptLevel,
        fault: Option<Fault>,
    ) -> Result<Schedule, GpuError> {
        graph.verify()?;
        apr_ir::group::check_coverage(graph, groups)?;
        // Value aliases: every output after a group's first shares the first one's buffer.
        let mut alias: HashMap<NodeId, NodeId> = HashMap::new();
        for grp in groups {
            if let Some((&first, rest)) = grp.outputs.split_first() {
                for &o in rest {
                    alias.insert(o, first);
                }
            }
        }
        let resolve = |id: NodeId| resolve(graph, &alias, id);
        let groups = &dependency_order(graph, groups, &resolve)?;
        let materialized: Vec<(NodeId, NodeId)> =
            groups.iter().flat_map(|grp| grp.outputs.iter().map(|&o| (o, resolve(o)))).collect();
        let mut own: HashSet<NodeId> = materialized.iter().map(|&(_, s)| s).collect();
        // A group realized node by node (a fault inside it) has its interior in buffers too.
        for grp in groups.iter().filter(|grp| expands(grp, fault)) {
            for &c in &grp.covers {
                if graph.node(c).is_some_and(|n| n.op.is_compute()) {
                    own.insert(storage_of(graph, c));
                }
            }
        }
        let max_ctx = graph.meta.max_ctx;
        let mut counts = ObjectCounts::default();
        let mut gpu_bytes = 0u64;
        let mut alloc = |label: &str, size: u64, usage: wgpu::BufferUsages| -> Result<wgpu::Buffer, GpuError> {
            let size = size.max(4).next_multiple_of(4);
            // Storage buffers in whole vec4s where the binding limit allows (the fused matvecs
            // read their input as `array<vec4<f32>>`; the padding is zeros, never a value).
            let vec4s = usage.contains(wgpu::BufferUsages::STORAGE) && size.next_multiple_of(16) <= gpu.max_binding;
            let size = if vec4s { size.next_multiple_of(16) } else { size };
            if size > gpu.limits.max_buffer_size {
                return Err(GpuError::TooLarge(size));
            }
            counts.buffers += 1;
            gpu_bytes += size;
            Ok(gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            }))
        };
        let mut up = Uploader { gpu: &gpu, pending: 0 };
        let step = alloc(
            "step",
            16,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        )?;
        let mut values = HashMap::new();
        let mut pieces = HashMap::new();
        let mut rows_of = HashMap::new();
        let mut inputs = Vec::new();
        let mut weight_f32: HashMap<NodeId, Vec<f32>> = HashMap::new();
        for n in &graph.nodes {
            match &n.op {
                Op::Weight { tensor } => {
                    let bytes = weights.bytes(tensor).map_err(|why| GpuError::Weight { name: tensor.clone(), why })?;
                    let want = n.ty.bytes(max_ctx).unwrap_or(u64::MAX);
                    if bytes.len() as u64 != want {
                        return Err(GpuError::Weight {
                            name: tensor.clone(),
                            why: format!("{} bytes, {} needs {want}", bytes.len(), n.ty),
                        });
                    }
                    let rows = if n.ty.shape.len() >= 2 { n.ty.shape[0].as_const().unwrap_or(1) } else { 1 };
                    let row_bytes = (want / rows.max(1)).max(1);
                    let per_piece = (gpu.max_binding / row_bytes).max(1);
                    if row_bytes > gpu.max_binding {
                        return Err(GpuError::Weight {
                            name: tensor.clone(),
                            why: format!("one row of {row_bytes} bytes exceeds the binding limit"),
                        });
                    }
                    // Each piece is a buffer of its own, from its first row, padded to 4 bytes:
                    // whole u32 words, or whole vec2<f16> pairs on the native f16 path.
                    let mut list = Vec::new();
                    let mut row0 = 0;
                    while row0 < rows {
                        let r = per_piece.min(rows - row0);
                        let slice = &bytes[(row0 * row_bytes) as usize..((row0 + r) * row_bytes) as usize];
                        let buf = alloc(tensor, slice.len() as u64, STORAGE)?;
                        up.write(&buf, slice);
                        list.push((row0, r, buf));
                        row0 += r;
                    }
                    if n.ty.shape.len() == 1 && n.ty.dtype.is_float_like() {
                        // Small vectors the planner may fold into host-computed tables (rope
                        // frequency factors), decoded from whatever dtype the file uses.
                        let mut v = vec![0.0f32; n.ty.shape[0].as_const().unwrap_or(0) as usize];
                        if apr_ir_model::quant::dequantize(n.ty.dtype, bytes, &mut v).is_ok() {
                            weight_f32.insert(n.id, v);
                        }
                    }
                    rows_of.insert(n.id, list.iter().map(|(a, b, _)| (*a, *b)).collect::<Vec<_>>());
                    if list.len() == 1 {
                        if let Some((_, _, b)) = list.first() {
                            values.insert(n.id, b.clone());
                        }
                    }
                    pieces.insert(n.id, list);
                }
                Op::Const { value } => {
                    let b = alloc(&n.name, 4, STORAGE)?;
                    up.write(&b, &(*value as f32).to_le_bytes());
                    values.insert(n.id, b);
                }
                Op::Input { kind } => {
                    values.insert(n.id, alloc(&n.name, 4, STORAGE)?);
                    inputs.push((
                        n.id,
                        match kind {
                            InputKind::Position => 0,
                            InputKind::Token => 8,
                        },
                    ));
                }
                Op::State => {
                    let size = n.ty.bytes(max_ctx).ok_or(GpuError::TooLarge(u64::MAX))?;
                    values.insert(n.id, alloc(&n.name, size, STORAGE)?);
                }
                _ if !own.contains(&n.id) => {}
                _ => {
                    let size = n.ty.bytes(max_ctx).ok_or(GpuError::TooLarge(u64::MAX))?;
                    if size > gpu.max_binding {
                        return Err(GpuError::TooLarge(size));
                    }
                    values.insert(n.id, alloc(&n.name, size, STORAGE)?);
                }
            }
        }
        // Plans, pipelines, bind groups.
        let rows = PieceRows(rows_of);
        let mut tables = Vec::new();
        let mut plans: Vec<(usize, Plan)> = Vec::new();
        for (k, grp) in groups.iter().enumerate() {
            let wf = |id| weight_f32.get(&id).cloned();
            let mut planned = plan_faulty_group(graph, grp, level, fault, &rows, &wf, &mut tables)?;
            for p in &mut planned {
                for b in &mut p.bindings {
                    if let Buf::Node(id) = b {
                        *id = resolve(*id);
                    }
                }
            }
            plans.extend(planned.into_iter().map(|p| (k, p)));
        }
        let mut table_bufs = Vec::new();
        for t in &tables {
            let b = alloc("table", (t.len() * 4) as u64, STORAGE)?;
            let bytes: Vec<u8> = t.iter().flat_map(|x| x.to_le_bytes()).collect();
            up.write(&b, &bytes);
            table_bufs.push(b);
        }
        let mut pipeline_ix: HashMap<PipelineKey, usize> = HashMap::new();
        let mut pipelines = Vec::new();
        let mut f16_pipelines = 0;
        let mut layouts = Vec::new();
        let mut dispatches = Vec::new();
        for (group, p) in &plans {
            let key = (p.family, p.dtype, p.dtype2);
            let pix = match pipeline_ix.get(&key) {
                Some(&i) => i,
                None => {
                    let (pipe, layout) = make_pipeline(&gpu, p);
                    counts.pipelines += 1;
                    f16_pipelines += usize::from(native_f16(p.family, p.dtype, gpu.f16));
                    pipelines.push(pipe);
                    layouts.push(layout);
                    pipeline_ix.insert(key, pipelines.len() - 1);
                    pipelines.len() - 1
                }
            };
            let params: Vec<u8> = p.params.iter().flat_map(|w| w.to_le_bytes()).collect();
            let pbuf = alloc("params", params.len() as u64, STORAGE)?;
            up.write(&pbuf, &params);
            let mut entries = vec![
                wgpu::BindGroupEntry { binding: 0, resource: step.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: pbuf.as_entire_binding() },
            ];
            for (k, b) in p.bindings.iter().enumerate() {
                let buffer = match b {
                    Buf::Node(id) => values.get(id),
                    Buf::Piece(id, i) => pieces.get(id).and_then(|l| l.get(*i)).map(|(_, _, b)| b),
                    Buf::Table(i) => table_bufs.get(*i),
                }
                .ok_or_else(|| GpuError::Internal(format!("no buffer for {b:?} of {}", p.node)))?;
                entries.push(wgpu::BindGroupEntry { binding: 2 + k as u32, resource: buffer.as_entire_binding() });
            }
            let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layouts[pix],
                entries: &entries,
            });
            counts.bind_groups += 1;
            dispatches.push(Dispatch { pipeline: pix, bind_group, grid: p.grid.clone(), group: *group });
        }
        let logits = match graph.output("logits") {
            Some(id) => {
                let src = resolve(id);
                let size = graph.node(id).and_then(|n| n.ty.bytes(max_ctx)).unwrap_or(4).next_multiple_of(4);
                let staging =
                    alloc("logits readback", size, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST)?;
                Some((src, size, staging))
            }
            None => None,
        };
        // Make sure uploads and compilation errors surface now, not on the first token.
        gpu.queue.submit([]);
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Device(e.to_string()))?;
        gpu.check()?;
        Ok(Schedule {
            gpu,
            graph: graph.clone(),
            step,
            values,
            pipelines,
            dispatches,
            inputs,
            logits,
            counts,
            f16_pipelines,
            groups: groups.clone(),
            level,
            materialized,
            gpu_bytes,
            alias,
            fault,
            last_token: 0,
            pipeline_ix,
            layouts,
            pieces,
            weight_f32,
            drill: None,
        })
    }

    /// The dispatch groups this schedule runs, in order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The level its groups were made at.
    pub fn level(&self) -> OptLevel {
        self.level
    }

    /// Dispatches per token.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches.len()
    }

    /// GPU objects created so far.
    pub fn object_counts(&self) -> ObjectCounts {
        self.counts
    }

    /// Pipelines that read F16 weights as `f16` storage: nonzero only on a device with
    /// `SHADER_F16` ([`Gpu::f16`]) and a graph with packed kernels over F16 weights.
    pub fn f16_pipelines(&self) -> usize {
        self.f16_pipelines
    }

    /// The device this schedule runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Decode `token` at `pos` and return the logits.
    pub fn step(&mut self, token: u32, pos: u32) -> Result<Vec<f32>, GpuError> {
        self.run(token, pos, false).map(|c| c.logits)
    }

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

    fn run(&mut self, token: u32, pos: u32, capture: bool) -> Result<Captured, GpuError> {
        let max_ctx = self.graph.meta.max_ctx;
        if u64::from(pos) >= max_ctx {
            return Err(GpuError::Position { pos, max_ctx });
        }
        let ctx = u64::from(pos) + 1;
        let words = [pos, pos + 1, token, 0];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.gpu.queue.write_buffer(&self.step, 0, &bytes);
        // Capture: every group output, from the buffer that holds it.
        let taps: Vec<(NodeId, NodeId, u64)> = if capture {
            self.materialized
                .iter()
                .filter_map(|&(id, src)| {
                    let bytes = self.graph.node(src).and_then(|s| s.ty.bytes(max_ctx))?;
                    Some((id, src, bytes.next_multiple_of(4)))
                })
                .collect()
        } else {
            Vec::new()
        };
        self.last_token = token;
        let mut poisoned = HashSet::new();
        for (id, src, size) in &taps {
            let state = self.graph.node(*src).is_some_and(|n| matches!(n.op, Op::State));
            if !state && poisoned.insert(*src) {
                if let Some(b) = self.values.get(src) {
                    self.gpu.queue.write_buffer(b, 0, &poison_bytes(*size));
                }
            } else if state {
                // A cache write: the row this step writes — unless something reads the cache
                // itself (its old contents, before the write), which must see the real row.
                let read_directly = self
                    .graph
                    .nodes
                    .iter()
                    .any(|u| u.inputs.contains(src) && !matches!(u.op, Op::CacheWrite { .. }) && u.id != *id);
                if let (false, Some(n), Some(b)) = (read_directly, self.graph.node(*id), self.values.get(src)) {
                    poison_row(&self.gpu, n, b, pos);
                }
            }
        }
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("token") });
        for (id, offset) in &self.inputs {
            if let Some(b) = self.values.get(id) {
                enc.copy_buffer_to_buffer(&self.step, *offset, b, 0, 4);
            }
        }
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("decode"), timestamp_writes: None });
            for d in &self.dispatches {
                let (x, y) = workgroups(&d.grid, ctx);
                if x == 0 {
                    continue;
                }
                pass.set_pipeline(&self.pipelines[d.pipeline]);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(x, y, 1);
            }
        }
        let mut out = Captured::default();
        // One staging buffer for everything read back this step (capture mode allocates it
        // per step; plain decoding reuses the logits staging buffer).
        let total: u64 = taps.iter().map(|t| t.2).sum();
        let capture_staging = if capture {
            Some(self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("capture"),
                size: total.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }))
        } else {
            None
        };
        if let Some(staging) = &capture_staging {
            let mut offset = 0;
            for (_, src, size) in &taps {
                if let Some(b) = self.values.get(src) {
                    enc.copy_buffer_to_buffer(b, 0, staging, offset, *size);
                }
                offset += size;
            }
        }
        if let Some((src, size, staging)) = &self.logits {
            let src = self.values.get(src).ok_or_else(|| GpuError::Internal("logits buffer".into()))?;
            enc.copy_buffer_to_buffer(src, 0, staging, 0, *size);
            self.gpu.queue.submit([enc.finish()]);
            out.logits = read_back(&self.gpu, staging)?;
        } else {
            self.gpu.queue.submit([enc.finish()]);
        }
        if let Some(staging) = &capture_staging {
            let all = read_back(&self.gpu, staging)?;
            let mut offset = 0usize;
            for (id, _, size) in &taps {
                let words = (*size / 4) as usize;
                let raw = all.get(offset..offset + words).unwrap_or_default();
                offset += words;
                if let Some(n) = self.graph.node(*id) {
                    out.values.insert(*id, in_use(n, raw, ctx));
                }
            }
        }
        self.gpu.check()?;
        Ok(out)
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

/// Values read back in capture mode.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub logits: Vec<f32>,
    /// Every group output's value (row-major at the step's `ctx`); at -O0 every computed node's.
    pub values: HashMap<NodeId, Vec<f32>>,
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

/// The node whose buffer holds `id`'s value: through views and cache writes
/// ([`storage_of`]), and from an output the rewrites proved equal to its group's first.
fn resolve(g: &Graph, alias: &HashMap<NodeId, NodeId>, id: NodeId) -> NodeId {
    let mut id = storage_of(g, id);
    // Each step moves to a group's first output, which is never an alias: at most one hop
    // after the first, but bounded anyway.
    for _ in 0..g.nodes.len() {
        match alias.get(&id) {
            Some(&first) if first != id => id = storage_of(g, first),
            _ => break,
        }
    }
    id
}

/// `groups` in an order where each group comes after the groups whose values it reads: the
/// given order wherever that already holds (Kahn's algorithm, ready groups taken by their
/// position in `groups`). Each fusion window is ordered by `apr_ir::fuse`, but the windows are
/// concatenated with the nodes outside every layer first, so a group such as the final norm
/// can arrive before the layers it reads. A group that reads a `state` node itself (not
/// through its `cache_write`) reads the cache as it was before this step's write, so it goes
/// before the write, as in the graph's node order. `Err` on a cycle.
fn dependency_order(g: &Graph, groups: &[Group], resolve: &dyn Fn(NodeId) -> NodeId) -> Result<Vec<Group>, GpuError> {
    let mut producer: HashMap<NodeId, usize> = HashMap::new();
    for (k, grp) in groups.iter().enumerate() {
        for &o in &grp.outputs {
            producer.insert(resolve(o), k);
        }
    }
    // The node a read names, through reshapes only (a cache write is not looked through).
    let viewed = |mut id: NodeId| {
        while let Some((Op::Reshape { .. }, Some(&src))) = g.node(id).map(|n| (&n.op, n.inputs.first())) {
            id = src;
        }
        id
    };
    // (before, after) pairs.
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for (k, grp) in groups.iter().enumerate() {
        let reads: Vec<NodeId> = if grp.kernel.is_node() {
            grp.value().and_then(|v| g.node(v)).map(|n| n.inputs.clone()).unwrap_or_default()
        } else {
            grp.kernel.operands()
        };
        for r in reads {
            let Some(&p) = producer.get(&resolve(r)) else { continue };
            let state = g.node(viewed(r)).is_some_and(|n| matches!(n.op, Op::State));
            if p != k {
                edges.push(if state { (k, p) } else { (p, k) });
            }
        }
    }
    edges.sort_unstable();
    edges.dedup();
    let mut indeg = vec![0usize; groups.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    for (before, after) in edges {
        indeg[after] += 1;
        dependents[before].push(after);
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..groups.len()).filter(|&k| indeg[k] == 0).collect();
    let mut out = Vec::with_capacity(groups.len());
    while let Some(k) = ready.pop_first() {
        out.push(groups[k].clone());
        for &d in &dependents[k] {
            indeg[d] -= 1;
            if indeg[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if out.len() != groups.len() {
        return Err(GpuError::Internal("the dispatch groups read each other in a cycle".into()));
    }
    Ok(out)
}

/// The pipeline of a plan's kernel and its bind group layout.
fn make_pipeline(gpu: &Gpu, p: &Plan) -> (wgpu::ComputePipeline, wgpu::BindGroupLayout) {
    let key = (p.family, p.dtype, p.dtype2);
    let layout = bind_group_layout(&gpu.device, p.bindings.len());
    let pipeline_layout = gpu.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&format!("{key:?}")),
        source: wgpu::ShaderSource::Wgsl(kernel_source(p, gpu.f16).into()),
    });
    let pipe = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&format!("{key:?}")),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    (pipe, layout)
}

/// The WGSL source of a plan's kernel on a device whose `SHADER_F16` is `shader_f16`.
fn kernel_source(p: &Plan, shader_f16: bool) -> String {
    if p.family.fused() {
        let dtypes: Vec<DType> = [p.dtype, p.dtype2].into_iter().flatten().collect();
        return fused_source(p.family, &dtypes);
    }
    source_for(p.family, p.dtype, shader_f16)
}

/// Binding 0: the step uniform; 1: parameters; then `n` storage buffers, the last written.
fn bind_group_layout(device: &wgpu::Device, n: usize) -> wgpu::BindGroupLayout {
    let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let mut entries = vec![
        wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        },
        storage(1, true),
    ];
    for k in 0..n {
        entries.push(storage(2 + k as u32, k + 1 < n));
    }
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries })
}

/// Workgroups `(x, y)` for a grid once `ctx` is bound (64 threads each; y only when x alone
/// cannot reach the count).
fn workgroups(grid: &Grid, ctx: u64) -> (u32, u32) {
    let groups = match grid {
        Grid::Threads(shape) => shape.iter().map(|d| d.eval(ctx)).product::<u64>().div_ceil(64),
        Grid::Workgroups(n) => *n,
    };
    let x = groups.min(65_535);
    let y = if x == 0 { 0 } else { groups.div_ceil(x) };
    (x as u32, y as u32)
}

/// Bytes of queued uploads after which the queue is flushed, so staging memory stays small
/// instead of holding a copy of every weight until the first submit.
const UPLOAD_FLUSH: usize = 256 << 20;

/// Queues buffer uploads, flushing every [`UPLOAD_FLUSH`] bytes.
struct Uploader<'a> {
    gpu: &'a Gpu,
    pending: usize,
}

impl Uploader<'_> {
    /// Write `bytes` to `buf`, padding to a multiple of 4.
    fn write(&mut self, buf: &wgpu::Buffer, bytes: &[u8]) {
        let whole = bytes.len() & !3;
        for (i, chunk) in bytes[..whole].chunks(UPLOAD_FLUSH).enumerate() {
            self.gpu.queue.write_buffer(buf, (i * UPLOAD_FLUSH) as u64, chunk);
            self.pending += chunk.len();
            if self.pending >= UPLOAD_FLUSH {
                self.gpu.queue.submit([]);
                let _ = self.gpu.device.poll(wgpu::PollType::wait_indefinitely());
                self.pending = 0;
            }
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.gpu.queue.write_buffer(buf, whole as u64, &tail);
        }
    }
}
/// Map a staging buffer and copy it out as f32.
fn read_back(gpu: &Gpu, staging: &wgpu::Buffer) -> Result<Vec<f32>, GpuError> {
    let slice = staging.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Device(e.to_string()))?;
    rx.recv().map_err(|e| GpuError::Device(e.to_string()))?.map_err(|e| GpuError::Device(e.to_string()))?;
    let out = {
        let view = slice.get_mapped_range().map_err(|e| GpuError::Device(e.to_string()))?;
        view.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    staging.unmap();
    Ok(out)
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
                if matches!(n.op, Op::CacheWrite { .. }) {
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

/// Record one dispatch at `ctx`.
fn encode(pass: &mut wgpu::ComputePass<'_>, pipelines: &[wgpu::ComputePipeline], d: &Dispatch, ctx: u64) {
    let (x, y) = workgroups(&d.grid, ctx);
    if x == 0 {
        return;
    }
    pass.set_pipeline(&pipelines[d.pipeline]);
    pass.set_bind_group(0, &d.bind_group, &[]);
    pass.dispatch_workgroups(x, y, 1);
}
