//! What a job fails with. The runner logs a failed run and tries again at the next tick; the
//! dashboard API maps these to HTTP answers by their type (a store that cannot be reached is
//! a 503, anything else a 500), never by their text.

/// Why a run of a job (or one rule's check) failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Reading or writing the database failed.
    #[error(transparent)]
    Store(#[from] tollgate_clickhouse::Error),
    /// A stored alert rule or budget this build cannot read (its check is skipped; its alerts
    /// are left as they are).
    #[error("{0}")]
    BadStoredRow(String),
    /// Something this build made is wrong (a bug, caught by its own checks).
    #[error("internal: {0}")]
    Internal(String),
}

impl JobError {
    /// The database could not be reached (rather than answering with an error).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, JobError::Store(e) if e.is_unavailable())
    }
}

impl From<tollgate_clickhouse::clickhouse::error::Error> for JobError {
    fn from(e: tollgate_clickhouse::clickhouse::error::Error) -> Self {
        JobError::Store(tollgate_clickhouse::Error::ClickHouse(e))
    }
}

pub type JobResult<T> = Result<T, JobError>;
