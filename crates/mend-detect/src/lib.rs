//! Streaming, online, IO-free anomaly detectors for mend, and a resource-exhaustion forecaster.
#![doc = include_str!("../README.md")]

pub mod alerting;
pub mod attach;
mod cad_ose;
mod cusum;
mod ensemble;
mod ewma;
mod forecast;
mod histogram;
mod likelihood;
mod mad;
mod point;
pub mod registry;
mod seasonal;
mod sensitivity;
mod shift;
mod stats;
pub mod synthetic;

pub use cad_ose::{CadOseDetector, CadOseParams, Eviction};
pub use cusum::CusumDetector;
pub use ensemble::{ChannelScores, EnsembleDetector, EnsembleParams};
pub use ewma::EwmaDetector;
pub use forecast::{Forecast, Forecaster, RunForecaster, TrendForecaster};
pub use likelihood::AnomalyLikelihood;
pub use mad::MadDetector;
pub use point::{Detector, Point, Score};
pub use registry::{AnyDetector, UnknownDetector};
pub use seasonal::SeasonalDetector;
pub use sensitivity::{Sensitivity, SensitivityError};
pub use shift::ShiftDetector;
