//! Seeded synthetic series (noise, spikes, shifts, trends, flatlines, seasonality) for tests and benchmarks.

/// A small deterministic generator (64-bit LCG with a xorshift output), so series are identical
/// on every platform and run.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let mut z = self.0;
        z ^= z >> 33;
        z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^= z >> 33;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Sampling interval of the synthetic series: 5 minutes, as most NAB files.
pub const STEP_SECS: f64 = 300.0;
/// Points per day at [`STEP_SECS`].
pub const POINTS_PER_DAY: usize = 288;
/// Start time of the synthetic series (2024-01-01 00:00:00 UTC, a Monday).
pub const START_SECS: f64 = 1_704_067_200.0;

/// The shapes the scenario tests and benchmarks use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// Gaussian noise around a level: nothing to find.
    Noise,
    /// Noise with one spike of `height` standard deviations at the change point.
    Spike {
        /// Spike height in noise standard deviations.
        height: f64,
    },
    /// Noise whose level shifts by `shift` standard deviations at the change point.
    LevelShift {
        /// Shift in noise standard deviations.
        shift: f64,
    },
    /// Noise around a flat level that starts to climb `slope` standard deviations per point.
    TrendChange {
        /// Slope in noise standard deviations per point.
        slope: f64,
    },
    /// Noise that freezes at its last value from the change point on (a stuck sensor).
    Flatline,
    /// A daily pattern with noise; from the change point the pattern stops (value at the daily mean).
    SeasonalityBreak,
    /// A daily pattern with noise throughout: nothing to find.
    Seasonal,
    /// Heavy-tailed counts (as NAB's tweet volumes): nothing planted.
    HeavyTailed,
}

/// A generated series: values at [`STEP_SECS`] intervals from [`START_SECS`].
#[derive(Clone, Debug)]
pub struct Series {
    /// Timestamps in seconds.
    pub timestamps: Vec<f64>,
    /// Values.
    pub values: Vec<f64>,
}

/// Generates `len` points of `shape` (level 100, noise σ = 5, daily amplitude 40) with the change at `change_idx`.
pub fn generate(shape: Shape, len: usize, change_idx: usize, seed: u64) -> Series {
    let mut rng = Rng::new(seed);
    let sigma = 5.0;
    let mut values = Vec::with_capacity(len);
    let mut frozen = None;
    for idx in 0..len {
        let after = idx >= change_idx;
        let noise = sigma * rng.normal();
        let daily = 40.0 * (std::f64::consts::TAU * (idx % POINTS_PER_DAY) as f64 / POINTS_PER_DAY as f64).sin();
        let value = match shape {
            Shape::Noise => 100.0 + noise,
            Shape::Spike { height } => 100.0 + noise + if idx == change_idx { height * sigma } else { 0.0 },
            Shape::LevelShift { shift } => 100.0 + noise + if after { shift * sigma } else { 0.0 },
            Shape::TrendChange { slope } => {
                100.0 + noise + if after { slope * sigma * (idx - change_idx) as f64 } else { 0.0 }
            }
            Shape::Flatline => {
                let value = 100.0 + noise;
                if after { *frozen.get_or_insert(value) } else { value }
            }
            Shape::SeasonalityBreak => 100.0 + noise + if after { 0.0 } else { daily },
            Shape::Seasonal => 100.0 + noise + daily,
            Shape::HeavyTailed => {
                // Log-normal counts with occasional bursts, rounded like mention counts.
                (20.0 * (0.6 * rng.normal()).exp()).round()
            }
        };
        values.push(value);
    }
    let timestamps = (0..len).map(|idx| START_SECS + idx as f64 * STEP_SECS).collect();
    Series { timestamps, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_normal_is_standard() {
        let a = generate(Shape::Noise, 1000, 500, 1);
        let b = generate(Shape::Noise, 1000, 500, 1);
        assert_eq!(a.values, b.values);
        let mut rng = Rng::new(3);
        let draws: Vec<f64> = (0..20_000).map(|_| rng.normal()).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }
}
