//! [`SimError`]: what can go wrong before or during a simulation.

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario cannot be simulated (the message says why).
    #[error("bad scenario: {0}")]
    Scenario(String),
    /// The scenario file is not valid JSON for a [`Scenario`](crate::Scenario).
    #[error("scenario JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The policy returned an error from `schedule` (as it would end `Runner::run`).
    #[error("the policy failed: {0}")]
    Policy(#[from] scx_userland::Error),
    /// A scenario file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
