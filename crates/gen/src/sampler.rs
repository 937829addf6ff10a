//! Next-token sampling: greedy, or temperature → top-k → top-p over a softmax, with a seeded
//! generator so runs repeat.

/// Sampling settings. `temperature == 0` is greedy (argmax, first index on ties).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    pub seed: u64,
}

impl SamplerConfig {
    pub fn greedy() -> SamplerConfig {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

/// A sampler with its own random state.
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplerConfig,
    state: u64,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Sampler {
        let state = cfg.seed ^ 0x853C_49E6_748F_EA9B;
        Sampler { cfg, state }
    }

    /// Pick the next token from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature <= 0.0 || logits.len() < 2 {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, l / self.cfg.temperature))
            .collect();
        if cand.is_empty() {
            return 0;
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.cfg.top_k > 0 {
            cand.truncate(self.cfg.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|&(_, l)| f64::from(l - max).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.cfg.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|p| {
                acc += p;
                acc >= f64::from(self.cfg.top_p)
            });
            let keep = keep.map_or(probs.len(), |k| k + 1);
            probs.truncate(keep);
            cand.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let r = self.next_f64();
        let mut acc = 0.0;
        for (k, p) in probs.iter().enumerate() {
            acc += p;
            if r < acc {
                return cand[k].0;
            }
        }
        cand[cand.len() - 1].0
    }

    /// Uniform in [0, 1) (PCG-style output over a SplitMix state).
    fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Index of the first maximum; NaN never wins.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || (x[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplerConfig {
        SamplerConfig { temperature, top_k, top_p, seed }
    }

    #[test]
    fn greedy_takes_first_max() {
        let mut s = Sampler::new(SamplerConfig::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
        assert_eq!(s.sample(&[f32::NAN, 1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(cfg(1.5, 1, 1.0, 7));
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.0, 0.5, 2.0, 1.9]), 2);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // probabilities ~ [0.665, 0.245, 0.090]: top_p 0.8 keeps two tokens.
        let logits = [2.0f32, 1.0, 0.0];
        let mut s = Sampler::new(cfg(1.0, 0, 0.8, 3));
        let picks: Vec<u32> = (0..2000).map(|_| s.sample(&logits)).collect();
        assert!(!picks.contains(&2));
        let ones = picks.iter().filter(|&&t| t == 1).count() as f64 / 2000.0;
        assert!((ones - 0.245 / 0.91).abs() < 0.04, "{ones}");
    }

    #[test]
    fn sampling_follows_the_softmax_and_repeats_with_the_seed() {
        let logits = [0.0f32, 1.0f32.ln(), 2.0f32.ln()]; // p = 1/4, 1/4, 1/2
        let mut a = Sampler::new(cfg(1.0, 0, 1.0, 42));
        let picks: Vec<u32> = (0..4000).map(|_| a.sample(&logits)).collect();
        let frac2 = picks.iter().filter(|&&t| t == 2).count() as f64 / 4000.0;
        assert!((frac2 - 0.5).abs() < 0.03, "{frac2}");
        let mut b = Sampler::new(cfg(1.0, 0, 1.0, 42));
        let again: Vec<u32> = (0..4000).map(|_| b.sample(&logits)).collect();
        assert_eq!(picks, again);
        let mut c = Sampler::new(cfg(1.0, 0, 1.0, 43));
        let other: Vec<u32> = (0..4000).map(|_| c.sample(&logits)).collect();
        assert_ne!(picks, other);
    }
}
