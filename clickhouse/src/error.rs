//! The crate's error type.

use std::time::Duration;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to ClickHouse or applying the schema.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The integrity job could not finish a repair (a mutation that does not end).
    #[error("integrity: {0}")]
    Integrity(String),

    /// The server refused a statement, or could not be reached.
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),

    /// A migration file is malformed (name, header, or a statement the runner cannot render).
    #[error("migration {file}: {reason}")]
    InvalidMigration { file: String, reason: String },

    /// A file that was applied has changed since. Applied migrations are immutable.
    #[error(
        "migration {file} was changed after it was applied to database `{database}` \
         (applied checksum {applied}, file now {current}). Applied migrations are immutable: \
         restore the file as it was and put the change in a new migration"
    )]
    ChangedAfterApply {
        file: String,
        database: String,
        applied: String,
        current: String,
    },

    /// The database records a migration this build does not have: a newer build migrated it.
    #[error(
        "database `{database}` has migration {version} ({name}) applied, which this build does \
         not know: it was migrated by a newer Tollgate; deploy that version (or newer)"
    )]
    UnknownApplied {
        database: String,
        version: u32,
        name: String,
    },

    /// Another runner holds the migration lock for longer than we wait.
    #[error(
        "could not take the migration lock of database `{database}` within {waited:?}: held by \
         {holder} since {since}. If that runner is gone (killed mid-run), release the lock with \
         `migrate --break-lock`; every migration statement is idempotent, so re-running is safe"
    )]
    LockTimeout {
        database: String,
        waited: Duration,
        holder: String,
        since: String,
    },

    /// A database or cluster name the runner will not splice into DDL.
    #[error("invalid {what} name {name:?}: use letters, digits and underscores only")]
    InvalidName { what: &'static str, name: String },

    /// `SELECT version()` returned something that is not a version.
    #[error("unrecognised server version {0:?}")]
    ServerVersion(String),

    /// A table expected to be partitioned by month is not.
    #[error("retention: table {table} has partition {partition:?}, not YYYYMM")]
    NotMonthly { table: String, partition: String },

    /// The private dev server could not be started or reached.
    #[error("dev server: {0}")]
    DevServer(String),
}

impl Error {
    /// The ClickHouse exception code in a server error (`Code: 57, …`), if this is one.
    pub fn server_code(&self) -> Option<u32> {
        match self {
            Error::ClickHouse(e) => server_code(&e.to_string()),
            _ => None,
        }
    }
}

/// Extracts `NN` from `… Code: NN. …` / `Code: NN, e.displayText() …`.
pub(crate) fn server_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + "Code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Error {
    /// The server could not be reached or did not answer in time (as opposed to answering
    /// with an error): a caller may say "unavailable, retry" rather than "failed".
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::ClickHouse(
                clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_are_found_in_both_message_styles() {
        assert_eq!(
            server_code(
                "bad response: Code: 57, e.displayText() = DB::Exception: Table x already exists"
            ),
            Some(57)
        );
        assert_eq!(
            server_code("Code: 60. DB::Exception: Table a.b does not exist"),
            Some(60)
        );
        assert_eq!(server_code("connection refused"), None);
    }
}
