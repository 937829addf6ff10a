//! The manual-graph schedule: buffers, pipelines, bind groups and the dispatch list are built
//! once; per token only the 16-byte step uniform is written, every dispatch is encoded into
//! one compute pass, and the command buffer is submitted once.
//!
//! A schedule runs the dispatch groups of `apr_ir::fuse` at some level (-O0: one per compute
//! node): one dispatch per group (per weight piece where a weight is split across bindings),
//! one buffer per group output (the interior of a fused group is never materialized; outputs
//! the rewrites proved equal share their group's buffer).
//!
//! This file holds the [`Schedule`] itself, its build (buffers, weight upload, dependency
//! order, pipelines, bind groups) and the decode step. The checker-facing side (capture mode,
//! per-group values, isolation, drill-down) is in `check.rs`; the wgpu plumbing they share
//! (pipelines and their layouts, workgroup counts, uploads, read-back) in `objects.rs`.

mod check;
mod objects;
mod order;
mod profile;

pub use check::Captured;

use crate::device::Gpu;
use crate::fault::{expands, plan_faulty_group, Fault};
use crate::kernels::{native_f16, Family};
use crate::plan::{storage_of, Buf, Grid, Pieces, Plan};
use crate::GpuError;
use apr_ir::fuse::OptLevel;
use apr_ir::group::Group;
use apr_ir::{DType, Graph, InputKind, NodeId, Op};
use check::Drill;
use objects::{encode, make_pipeline, read_back, Uploader};
use order::{dependency_order, resolve};
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
    /// The timestamps of the last profiled step, resolved and waiting to be read (`profile.rs`).
    stamp_staging: Option<wgpu::Buffer>,
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
        let mut up = Uploader::new(&gpu);
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
        // One scratch buffer for every group that needs one, as large as the largest need.
        let scratch_bytes = plans
            .iter()
            .flat_map(|(_, p)| &p.bindings)
            .filter_map(|b| match b {
                Buf::Scratch(n) => Some(*n),
                _ => None,
            })
            .max();
        let scratch = match scratch_bytes {
            Some(n) if n > gpu.max_binding => return Err(GpuError::TooLarge(n)),
            Some(n) => Some(alloc("scratch", n.max(4), STORAGE)?),
            None => None,
        };
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
                    f16_pipelines += usize::from([p.dtype, p.dtype2].iter().any(|&d| native_f16(p.family, d, gpu.f16)));
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
                    Buf::Scratch(_) => scratch.as_ref(),
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
            stamp_staging: None,
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

    fn run(&mut self, token: u32, pos: u32, capture: bool) -> Result<Captured, GpuError> {
        self.run_stamped(token, pos, capture, None)
    }

    /// [`Self::run`], writing a timestamp into `stamps` before each dispatch and after the last
    /// where given (`profile.rs`).
    fn run_stamped(
        &mut self,
        token: u32,
        pos: u32,
        capture: bool,
        stamps: Option<&wgpu::QuerySet>,
    ) -> Result<Captured, GpuError> {
        let max_ctx = self.graph.meta.max_ctx;
        if u64::from(pos) >= max_ctx {
            return Err(GpuError::Position { pos, max_ctx });
        }
        let ctx = u64::from(pos) + 1;
        let words = [pos, pos + 1, token, 0];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.gpu.queue.write_buffer(&self.step, 0, &bytes);
        // Capture: every group output, from the buffer that holds it.
        let taps = if capture { self.capture_taps() } else { Vec::new() };
        self.last_token = token;
        self.poison_taps(&taps, pos);
        let mut enc = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("token") });
        for (id, offset) in &self.inputs {
            if let Some(b) = self.values.get(id) {
                enc.copy_buffer_to_buffer(&self.step, *offset, b, 0, 4);
            }
        }
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("decode"), timestamp_writes: None });
            for (i, d) in self.dispatches.iter().enumerate() {
                if let Some(q) = stamps {
                    pass.write_timestamp(q, i as u32);
                }
                encode(&mut pass, &self.pipelines, d, ctx);
            }
            if let Some(q) = stamps {
                pass.write_timestamp(q, self.dispatches.len() as u32);
            }
        }
        if let Some(q) = stamps {
            self.resolve_stamps(&mut enc, q);
        }
        let mut out = Captured::default();
        // One staging buffer for everything read back this step (capture mode allocates it
        // per step; plain decoding reuses the logits staging buffer).
        let capture_staging = if capture { Some(self.copy_taps(&mut enc, &taps)) } else { None };
        if let Some((src, size, staging)) = &self.logits {
            let src = self.values.get(src).ok_or_else(|| GpuError::Internal("logits buffer".into()))?;
            enc.copy_buffer_to_buffer(src, 0, staging, 0, *size);
            self.gpu.queue.submit([enc.finish()]);
            out.logits = read_back(&self.gpu, staging)?;
        } else {
            self.gpu.queue.submit([enc.finish()]);
        }
        if let Some(staging) = &capture_staging {
            out.values = self.read_taps(staging, &taps, ctx)?;
        }
        self.gpu.check()?;
        Ok(out)
    }
}
