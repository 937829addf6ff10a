//! The schedule as a generation backend.

use crate::Schedule;
use apr_ir_gen::{Decoder, GenError, ProfiledStep};

/// Decodes with a wgpu schedule.
pub struct GpuDecoder {
    pub schedule: Schedule,
    max_positions: u32,
}

impl GpuDecoder {
    pub fn new(schedule: Schedule, max_positions: u64) -> GpuDecoder {
        GpuDecoder { schedule, max_positions: u32::try_from(max_positions).unwrap_or(u32::MAX) }
    }
}

impl Decoder for GpuDecoder {
    fn step(&mut self, token: u32, pos: u32) -> Result<Vec<f32>, GenError> {
        self.schedule.step(token, pos).map_err(|e| GenError::Backend(e.to_string()))
    }

    fn max_positions(&self) -> u32 {
        self.max_positions
    }

    fn step_profiled(&mut self, token: u32, pos: u32) -> Option<Result<ProfiledStep, GenError>> {
        Some(self.schedule.step_profiled(token, pos).map_err(|e| GenError::Backend(e.to_string())))
    }
}
