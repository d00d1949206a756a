//! Diagnosis for mend: names what is wrong with a service, with a confidence and evidence a person can
//! check, and ranks the services of an incident by how likely each is its root cause. Pure: no IO, no
//! clock; time arrives with the data.
#![doc = include_str!("../README.md")]

pub mod baselines;
mod component;
pub mod decide;
pub mod ejection;
pub mod evidence;
mod graph;
mod incident;
pub mod rank;
pub mod robust;
mod series;

pub use component::Component;
pub use decide::{
    Confidence, DecideInput, DecideParams, Diagnosis, DiagnosisKind, Lifecycle, LifecycleFact, ProbeKind, ResourceUse,
    ServiceFacts, decide,
};
pub use ejection::{EjectionFacts, SiblingAnswers};
pub use evidence::{Evidence, Resource, Shift};
pub use graph::{DependencyGraph, EdgeSource};
pub use incident::{IncidentDiagnosis, IncidentInput, diagnose};
pub use rank::{Candidate, Explanation, Finding, Propagation, RankInput, RankParams, Ranking, rank};
pub use series::{MetricClass, SeriesInput};
