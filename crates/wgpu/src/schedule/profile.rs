//! Where a decode step's GPU time goes: timestamps written between the dispatches of its
//! compute pass (`TIMESTAMP_QUERY_INSIDE_PASSES`), read back per dispatch.
//!
//! The interval from one dispatch's timestamp to the next is that dispatch's execution plus
//! whatever the device spends between the two (the barrier wgpu puts between dependent
//! dispatches, launch latency), so the intervals add up to the pass. Writing the timestamps
//! costs time of its own (on an H200 a 7B step took ~7 % longer with them), so profiled steps
//! say where time goes, and unprofiled ones how much there is.

use super::{objects::read_back_bytes, PipelineKey, Schedule};
use crate::GpuError;
use apr_ir_gen::DispatchTime;
use std::collections::HashMap;

/// The most timestamps one query set holds (wgpu's `QUERY_SET_MAX_QUERIES`).
const MAX_STAMPS: usize = 4096;

impl Schedule {
    /// Decode `token` at `pos` like [`Schedule::step`], timing every dispatch: the logits and
    /// one [`DispatchTime`] per dispatch, in schedule order. An error where the device cannot
    /// write timestamps inside a compute pass ([`crate::Gpu::timestamps`]) or the schedule has
    /// more dispatches than one query set holds.
    pub fn step_profiled(&mut self, token: u32, pos: u32) -> Result<(Vec<f32>, Vec<DispatchTime>), GpuError> {
        if !self.gpu.timestamps {
            return Err(GpuError::Device(format!(
                "{} cannot write timestamps between dispatches (TIMESTAMP_QUERY_INSIDE_PASSES)",
                self.gpu.describe()
            )));
        }
        let n = self.dispatches.len() + 1;
        if n > MAX_STAMPS {
            return Err(GpuError::Device(format!(
                "{} dispatches per token: a query set holds {} timestamps",
                n - 1,
                MAX_STAMPS
            )));
        }
        let stamps = self.gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("dispatch timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: n as u32,
        });
        let logits = self.run_stamped(token, pos, false, Some(&stamps))?.logits;
        let staging =
            self.stamp_staging.take().ok_or_else(|| GpuError::Internal("no timestamps were resolved".into()))?;
        let bytes = read_back_bytes(&self.gpu, &staging)?;
        let ticks: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect();
        let ns_per_tick = f64::from(self.gpu.queue.get_timestamp_period());
        let keys: HashMap<usize, &PipelineKey> = self.pipeline_ix.iter().map(|(k, &i)| (i, k)).collect();
        let times = self
            .dispatches
            .iter()
            .zip(ticks.windows(2))
            .map(|(d, t)| {
                let kernel = keys.get(&d.pipeline).map_or_else(|| "?".to_string(), |k| kernel_label(k));
                let node = self
                    .groups
                    .get(d.group)
                    .and_then(|g| g.outputs.first())
                    .and_then(|&id| self.graph.node(id))
                    .map_or_else(String::new, |n| n.name.clone());
                DispatchTime { kernel, node, micros: t[1].saturating_sub(t[0]) as f64 * ns_per_tick / 1e3 }
            })
            .collect();
        Ok((logits, times))
    }

    /// Copy the timestamps of `stamps` into a new staging buffer (kept for
    /// [`Schedule::step_profiled`] to read once the step is submitted).
    pub(super) fn resolve_stamps(&mut self, enc: &mut wgpu::CommandEncoder, stamps: &wgpu::QuerySet) {
        let n = u64::from(stamps.count());
        let buffer = |label: &str, usage: wgpu::BufferUsages| {
            self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 8 * n,
                usage,
                mapped_at_creation: false,
            })
        };
        let resolved = buffer("timestamps", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let staging = buffer("timestamps read-back", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        enc.resolve_query_set(stamps, 0..n as u32, &resolved, 0);
        enc.copy_buffer_to_buffer(&resolved, 0, &staging, 0, 8 * n);
        self.stamp_staging = Some(staging);
    }
}

/// `MatvecSwiGlu q4_k+q6_k`: the family and the dtypes of a pipeline.
fn kernel_label(key: &PipelineKey) -> String {
    let (family, a, b) = key;
    let dtypes: Vec<String> = [a, b].into_iter().flatten().map(|d| d.to_string()).collect();
    if dtypes.is_empty() {
        format!("{family:?}")
    } else {
        format!("{family:?} {}", dtypes.join("+"))
    }
}
