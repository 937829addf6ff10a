//! Generation, shared by every backend.
//!
//! A backend is anything that turns (token, position) into next-token logits while keeping
//! its own KV cache: the [`Decoder`] trait. On top of it this crate owns what must not differ
//! between backends — sampling (greedy, temperature, top-k, top-p, seeded), the decode loop
//! (prompt tokens one at a time, then sampled tokens fed back), and stopping (end-of-sequence
//! tokens, a token budget, the context limit). Tokens are handed to a callback as they come.

mod sampler;

pub use sampler::{argmax, Sampler, SamplerConfig};

/// One-token-at-a-time next-token prediction with an internal KV cache.
pub trait Decoder {
    /// Process `token` at position `pos` (positions count up from 0 without gaps) and
    /// return the logits for the next token.
    fn step(&mut self, token: u32, pos: u32) -> Result<Vec<f32>, GenError>;
    /// Positions the decoder can hold.
    fn max_positions(&self) -> u32;
    /// [`Decoder::step`], timing each kernel dispatch of the step, where the backend can: the
    /// logits and one [`DispatchTime`] per dispatch in order. `None` where it cannot (the CPU
    /// interpreter has no dispatches).
    fn step_profiled(&mut self, _token: u32, _pos: u32) -> Option<Result<ProfiledStep, GenError>> {
        None
    }
}

/// The logits of a profiled step and the time of each of its dispatches, in order.
pub type ProfiledStep = (Vec<f32>, Vec<DispatchTime>);

/// The device time of one kernel dispatch of a decode step ([`Decoder::step_profiled`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchTime {
    /// The kernel: its family and the dtypes it is specialized for (`MatvecSwiGlu q4_k+q6_k`).
    pub kernel: String,
    /// The graph node the dispatch is named by (the first output of its dispatch group).
    pub node: String,
    /// Microseconds from the start of this dispatch to the start of the next.
    pub micros: f64,
}

/// Why generation stopped early.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("{needed} positions are needed but the model was compiled for {max}")]
    ContextFull { needed: u64, max: u32 },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("backend: {0}")]
    Backend(String),
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to sample (0: only process the prompt).
    pub max_tokens: u32,
    /// Tokens that end generation (not emitted).
    pub stop: Vec<u32>,
    pub sampler: SamplerConfig,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was sampled.
    Stop,
    /// `max_tokens` were generated.
    Budget,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Sampled tokens, stop token excluded.
    pub tokens: Vec<u32>,
    pub reason: StopReason,
    /// Positions processed (prompt + generated tokens fed back).
    pub positions: u32,
}

/// Run the prompt through `dec`, then sample up to `max_tokens` tokens.
///
/// `on_logits` sees the logits of every processed position, in order: the prompt's
/// positions, then one per generated token that was fed back (the last sampled token is not
/// fed back, since nothing reads its logits). `on_token` sees each sampled token as it comes.
pub fn generate(
    dec: &mut dyn Decoder,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32),
    on_logits: &mut dyn FnMut(&[f32]),
) -> Result<Generation, GenError> {
    if prompt.is_empty() {
        return Err(GenError::EmptyPrompt);
    }
    // The last sampled token is never fed back, so the prompt plus max_tokens - 1 positions
    // must fit.
    let needed = prompt.len() as u64 + u64::from(opts.max_tokens.saturating_sub(1));
    if needed > u64::from(dec.max_positions()) {
        return Err(GenError::ContextFull { needed, max: dec.max_positions() });
    }
    let mut sampler = Sampler::new(opts.sampler.clone());
    let mut logits = Vec::new();
    let mut pos = 0u32;
    for &t in prompt {
        logits = dec.step(t, pos)?;
        on_logits(&logits);
        pos += 1;
    }
    let mut tokens = Vec::new();
    for i in 0..opts.max_tokens {
        let next = sampler.sample(&logits);
        if opts.stop.contains(&next) {
            return Ok(Generation { tokens, reason: StopReason::Stop, positions: pos });
        }
        tokens.push(next);
        on_token(next);
        if i + 1 == opts.max_tokens {
            break;
        }
        logits = dec.step(next, pos)?;
        on_logits(&logits);
        pos += 1;
    }
    Ok(Generation { tokens, reason: StopReason::Budget, positions: pos })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Predicts `(last token + 1) % vocab`, and records what it was fed.
    struct Counter {
        vocab: usize,
        fed: Vec<(u32, u32)>,
    }

    impl Decoder for Counter {
        fn step(&mut self, token: u32, pos: u32) -> Result<Vec<f32>, GenError> {
            self.fed.push((token, pos));
            let mut l = vec![0.0; self.vocab];
            l[(token as usize + 1) % self.vocab] = 1.0;
            Ok(l)
        }
        fn max_positions(&self) -> u32 {
            16
        }
    }

    fn opts(max_tokens: u32, stop: Vec<u32>) -> GenerateOptions {
        GenerateOptions { max_tokens, stop, sampler: SamplerConfig::greedy() }
    }

    #[test]
    fn feeds_prompt_then_samples_and_stops() {
        let mut d = Counter { vocab: 10, fed: vec![] };
        let mut streamed = vec![];
        let mut rows = 0;
        let g = generate(&mut d, &[3, 4], &opts(10, vec![8]), &mut |t| streamed.push(t), &mut |_| rows += 1).unwrap();
        assert_eq!(g.tokens, vec![5, 6, 7]);
        assert_eq!(streamed, g.tokens);
        assert_eq!(g.reason, StopReason::Stop);
        assert_eq!(d.fed, vec![(3, 0), (4, 1), (5, 2), (6, 3), (7, 4)]);
        assert_eq!(rows, 5);
        assert_eq!(g.positions, 5);
    }

    #[test]
    fn zero_budget_processes_only_the_prompt() {
        let mut d = Counter { vocab: 10, fed: vec![] };
        let mut rows = 0;
        let g = generate(&mut d, &[1, 2, 3], &opts(0, vec![]), &mut |_| {}, &mut |_| rows += 1).unwrap();
        assert!(g.tokens.is_empty());
        assert_eq!(rows, 3);
    }

    #[test]
    fn budget_and_context_are_enforced() {
        let mut d = Counter { vocab: 100, fed: vec![] };
        let g = generate(&mut d, &[1], &opts(4, vec![]), &mut |_| {}, &mut |_| {}).unwrap();
        assert_eq!(g.tokens, vec![2, 3, 4, 5]);
        assert_eq!(g.reason, StopReason::Budget);
        let err = generate(&mut d, &[1; 10], &opts(8, vec![]), &mut |_| {}, &mut |_| {}).unwrap_err();
        assert_eq!(err, GenError::ContextFull { needed: 17, max: 16 });
        assert_eq!(
            generate(&mut d, &[], &opts(1, vec![]), &mut |_| {}, &mut |_| {}).unwrap_err(),
            GenError::EmptyPrompt
        );
    }
}
