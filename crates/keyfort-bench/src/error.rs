//! Why the benchmark could not run (as opposed to a measured request failing: `ops::OpError`).

use std::error::Error;
use std::fmt;

use reqwest::StatusCode;

#[derive(Debug)]
#[non_exhaustive]
pub enum BenchError {
    /// A setup step failed with an error from below.
    Step {
        step: String,
        source: Box<dyn Error + Send + Sync>,
    },
    /// A server answered a setup request with an unexpected status.
    Status {
        step: String,
        status: StatusCode,
        body: String,
    },
    /// A server answered, but not with what the step needs.
    Invalid { step: String, detail: String },
    /// Measured requests failed; the report shows them.
    RequestsFailed { count: u64 },
}

impl BenchError {
    pub fn step(step: impl Into<String>, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        BenchError::Step {
            step: step.into(),
            source: source.into(),
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Step { step, .. } => write!(f, "{step} failed"),
            BenchError::Status { step, status, body } => {
                write!(f, "{step}: unexpected {status}: {body}")
            }
            BenchError::Invalid { step, detail } => write!(f, "{step}: {detail}"),
            BenchError::RequestsFailed { count } => {
                write!(
                    f,
                    "{count} measured request(s) failed; see the errors column"
                )
            }
        }
    }
}

impl Error for BenchError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BenchError::Step { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
