//! Detectors by name, so a config file or CLI can pick one with a sensitivity.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cad_ose::CadOseDetector;
use crate::cusum::CusumDetector;
use crate::ensemble::EnsembleDetector;
use crate::ewma::EwmaDetector;
use crate::mad::MadDetector;
use crate::point::{Detector, Point, Score};
use crate::seasonal::SeasonalDetector;
use crate::sensitivity::Sensitivity;
use crate::shift::ShiftDetector;

/// Every registered name, the default first.
pub const NAMES: &[&str] = &["default", "ewma", "mad", "seasonal", "cusum", "shift", "cad_ose"];

/// One of the registered detectors; serialisable as a whole, with the variant as tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "detector", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one detector per series, updated in place; boxing would add a pointer chase per point"
)]
pub enum AnyDetector {
    /// `default`: [`EnsembleDetector`].
    Default(EnsembleDetector),
    /// `ewma`: [`EwmaDetector`].
    Ewma(EwmaDetector),
    /// `mad`: [`MadDetector`].
    Mad(MadDetector),
    /// `seasonal`: [`SeasonalDetector`].
    Seasonal(SeasonalDetector),
    /// `cusum`: [`CusumDetector`].
    Cusum(CusumDetector),
    /// `shift`: [`ShiftDetector`].
    Shift(ShiftDetector),
    /// `cad_ose`: [`CadOseDetector`] (opt-in; CAD OSE with NAB's constants).
    CadOse(CadOseDetector),
}

/// A name that is not in [`NAMES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownDetector {
    /// The name asked for.
    pub name: String,
}

impl fmt::Display for UnknownDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown detector {:?}, expected one of {}", self.name, NAMES.join(", "))
    }
}

impl std::error::Error for UnknownDetector {}

/// Builds a fresh detector by registered name.
pub fn build(name: &str, sensitivity: Sensitivity) -> Result<AnyDetector, UnknownDetector> {
    Ok(match name {
        "default" => AnyDetector::Default(EnsembleDetector::new(sensitivity)),
        "ewma" => AnyDetector::Ewma(EwmaDetector::new(sensitivity)),
        "mad" => AnyDetector::Mad(MadDetector::new(sensitivity)),
        "seasonal" => AnyDetector::Seasonal(SeasonalDetector::new(sensitivity)),
        "cusum" => AnyDetector::Cusum(CusumDetector::new(sensitivity)),
        "shift" => AnyDetector::Shift(ShiftDetector::new(sensitivity)),
        "cad_ose" => AnyDetector::CadOse(CadOseDetector::new(sensitivity)),
        _ => {
            return Err(UnknownDetector { name: name.to_owned() });
        }
    })
}

impl Detector for AnyDetector {
    fn update(&mut self, point: Point) -> Score {
        match self {
            Self::Default(detector) => detector.update(point),
            Self::Ewma(detector) => detector.update(point),
            Self::Mad(detector) => detector.update(point),
            Self::Seasonal(detector) => detector.update(point),
            Self::Cusum(detector) => detector.update(point),
            Self::Shift(detector) => detector.update(point),
            Self::CadOse(detector) => detector.update(point),
        }
    }

    fn state_bytes(&self) -> usize {
        match self {
            Self::Default(detector) => detector.state_bytes(),
            Self::Ewma(detector) => detector.state_bytes(),
            Self::Mad(detector) => detector.state_bytes(),
            Self::Seasonal(detector) => detector.state_bytes(),
            Self::Cusum(detector) => detector.state_bytes(),
            Self::Shift(detector) => detector.state_bytes(),
            Self::CadOse(detector) => detector.state_bytes(),
        }
    }
}
