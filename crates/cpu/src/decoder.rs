//! The interpreter as a generation backend.

use crate::{Capture, Interpreter};
use apr_ir_gen::{Decoder, GenError};

/// Decodes with the reference interpreter; reads the graph output named `logits`.
pub struct CpuDecoder<'a> {
    interp: Interpreter<'a>,
    max_positions: u32,
}

impl<'a> CpuDecoder<'a> {
    pub fn new(interp: Interpreter<'a>, max_positions: u64) -> CpuDecoder<'a> {
        CpuDecoder { interp, max_positions: u32::try_from(max_positions).unwrap_or(u32::MAX) }
    }
}

impl Decoder for CpuDecoder<'_> {
    fn step(&mut self, token: u32, pos: u32) -> Result<Vec<f32>, GenError> {
        let r = self.interp.step(token, pos, &Capture::None).map_err(|e| GenError::Backend(e.to_string()))?;
        let logits = r
            .output("logits")
            .and_then(|t| t.as_f32())
            .ok_or_else(|| GenError::Backend("graph has no f32 output `logits`".into()))?;
        Ok(logits.to_vec())
    }

    fn max_positions(&self) -> u32 {
        self.max_positions
    }
}
