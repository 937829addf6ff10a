//! How far one value is from another.

/// The difference of `got` from the reference `want`, in f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// Elements of `got` that are NaN or infinite (checked first: they make the rest moot).
    pub nonfinite: usize,
    /// Σ(got − want)² / Σ want² (0 when both are all zero).
    pub nmse: f64,
    /// max |got − want|.
    pub max_abs: f64,
    /// got · want / (|got| |want|); 1 when both are all zero.
    pub cosine: f64,
}

/// Compare `got` with the reference `want`. Lengths must match; a length mismatch is
/// reported as every element non-finite, since nothing can be compared.
pub fn compare(got: &[f32], want: &[f32]) -> Metrics {
    if got.len() != want.len() {
        return Metrics {
            nonfinite: got.len().max(want.len()),
            nmse: f64::INFINITY,
            max_abs: f64::INFINITY,
            cosine: 0.0,
        };
    }
    let nonfinite = got.iter().filter(|v| !v.is_finite()).count();
    let (mut err, mut norm_w, mut norm_g, mut dot, mut max_abs) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (f64::from(g), f64::from(w));
        let d = g - w;
        err += d * d;
        norm_w += w * w;
        norm_g += g * g;
        dot += g * w;
        max_abs = max_abs.max(d.abs());
    }
    let nmse = if norm_w > 0.0 {
        err / norm_w
    } else if err == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    let cosine =
        if norm_w == 0.0 && norm_g == 0.0 { 1.0 } else { dot / (norm_w.sqrt() * norm_g.sqrt()).max(f64::MIN_POSITIVE) };
    Metrics { nonfinite, nmse, max_abs, cosine }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_values_are_perfect() {
        let m = compare(&[1.0, -2.0, 3.0], &[1.0, -2.0, 3.0]);
        assert_eq!(m, Metrics { nonfinite: 0, nmse: 0.0, max_abs: 0.0, cosine: 1.0 });
    }

    #[test]
    fn a_five_percent_scale_is_seen() {
        let want = [0.5f32, -1.0, 2.0, 0.25];
        let got: Vec<f32> = want.iter().map(|x| x * 1.05).collect();
        let m = compare(&got, &want);
        assert!((m.nmse - 0.0025).abs() < 1e-7, "{m:?}");
        assert!((m.cosine - 1.0).abs() < 1e-12);
        assert!((m.max_abs - 0.1).abs() < 1e-6);
    }

    #[test]
    fn nonfinite_and_mismatched_lengths_are_reported() {
        assert_eq!(compare(&[f32::NAN, 1.0], &[0.0, 1.0]).nonfinite, 1);
        assert_eq!(compare(&[1.0], &[1.0, 2.0]).nonfinite, 2);
        assert_eq!(compare(&[0.0, 0.0], &[0.0, 0.0]).cosine, 1.0);
        assert_eq!(compare(&[1.0, 0.0], &[0.0, 0.0]).nmse, f64::INFINITY);
    }
}
