//! The logits parity gate: is a backend's next-token distribution the reference's?
//!
//! The rule is the incident's parity contract: cosine of the full logit vector ≥ 0.99 (in f64)
//! and the same argmax — unless the reference's top two logits are within rounding of each
//! other, where either answer is right.

use crate::metrics::compare;

/// Thresholds of the gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateRule {
    pub min_cosine: f64,
    /// Two reference logits closer than this (relative to the larger, at least 1) are a tie.
    pub tie: f32,
}

impl Default for GateRule {
    fn default() -> GateRule {
        GateRule { min_cosine: 0.99, tie: 1e-3 }
    }
}

/// Why the gate failed.
#[derive(Debug, Clone, PartialEq)]
pub struct GateFailure {
    pub cosine: f64,
    pub nonfinite: usize,
    pub argmax: Option<usize>,
    pub reference_argmax: Option<usize>,
}

impl std::fmt::Display for GateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |a: Option<usize>| a.map_or("-".to_string(), |a| a.to_string());
        write!(
            f,
            "logits cosine {:.4}, {} non-finite, argmax {} vs reference {}",
            self.cosine,
            self.nonfinite,
            show(self.argmax),
            show(self.reference_argmax)
        )
    }
}

/// Check `got` against the reference logits `want`.
pub fn logits_gate(got: &[f32], want: &[f32], rule: GateRule) -> Result<(), GateFailure> {
    let m = compare(got, want);
    let (ia, ib) = (argmax(want), argmax(got));
    let fail = GateFailure { cosine: m.cosine, nonfinite: m.nonfinite, argmax: ib, reference_argmax: ia };
    if m.nonfinite > 0 || m.cosine.is_nan() || m.cosine < rule.min_cosine {
        return Err(fail);
    }
    match (ia, ib) {
        (Some(a), Some(b)) if a == b => Ok(()),
        (Some(a), Some(b)) => {
            let (va, vb) = (want[a], want[b]);
            if (va - vb).abs() <= rule.tie * va.abs().max(1.0) {
                Ok(())
            } else {
                Err(fail)
            }
        }
        _ => Err(fail),
    }
}

/// Index of the first maximum (NaN never wins); `None` for an empty or all-NaN slice.
fn argmax(x: &[f32]) -> Option<usize> {
    x.iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
            Some((_, bv)) if bv >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_logits_pass_and_a_flipped_argmax_fails() {
        let want = [0.1f32, 2.0, 1.0, -0.5];
        assert!(logits_gate(&want, &want, GateRule::default()).is_ok());
        let flipped = [0.1f32, 1.0, 2.0, -0.5];
        let e = logits_gate(&flipped, &want, GateRule::default()).unwrap_err();
        assert_eq!((e.argmax, e.reference_argmax), (Some(2), Some(1)));
    }

    #[test]
    fn near_ties_may_go_either_way() {
        let want = [1.0f32, 5.0, 5.0001, 0.0];
        let got = [1.0f32, 5.0001, 5.0, 0.0];
        assert!(logits_gate(&got, &want, GateRule::default()).is_ok());
    }

    #[test]
    fn low_cosine_or_nan_fails() {
        let want = [1.0f32, 0.0, 0.0, 3.0];
        assert!(logits_gate(&[0.0, 1.0, 1.0, 3.0], &want, GateRule::default()).is_err());
        assert!(logits_gate(&[1.0, f32::NAN, 0.0, 3.0], &want, GateRule::default()).is_err());
        assert!(logits_gate(&[1.0], &want, GateRule::default()).is_err());
    }
}
