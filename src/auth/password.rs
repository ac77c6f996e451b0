//! Argon2id password hashes for local accounts, computed on the blocking pool (a hash takes
//! tens of milliseconds of CPU, far too long for an async worker).
//!
//! Hashes are bounded: at most one per core runs at once and a few per core wait their turn;
//! past that a caller is refused at once with [`Busy`]. Unbounded, a login flood held one
//! Argon2 computation (19 MiB with the default parameters) per request in flight, hundreds at
//! a time, and starved the store reads that share the blocking pool.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Hashes that may wait for a core, per core: a waiter is served within about this many hash
/// times, and the requests beyond are refused rather than queued without end.
const WAITING_PER_CORE: usize = 4;

/// Too many hashes running and waiting: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once; try again shortly")]
pub struct Busy;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The bound on hashes: permits for those running, a count of those waiting.
#[derive(Debug)]
struct Gate {
    running: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// One gate for the process: the cores it bounds are the machine's, however many daemons run.
fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Gate {
            running: Semaphore::new(cores),
            waiting: AtomicUsize::new(0),
            max_waiting: cores * WAITING_PER_CORE,
        }
    })
}

impl Gate {
    /// A turn to hash, after waiting if there is room to wait; [`Busy`] if not.
    async fn enter(&self) -> Result<SemaphorePermit<'_>, Busy> {
        if let Ok(permit) = self.running.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        // Leaves the queue also when the request is dropped while waiting.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        // The semaphore is never closed.
        self.running.acquire().await.map_err(|_| Busy)
    }
}

/// Runs `work` on the blocking pool once the gate lets it; `Ok(None)` if it panicked.
async fn gated<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, Busy> {
    let turn = gate().enter().await?;
    // The permit goes with the work: if the caller goes away meanwhile, the blocking task still
    // runs to its end, and must keep counting against the bound until then.
    let task = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        work()
    });
    Ok(task.await.ok())
}

/// Hashes `password` with Argon2id and a random salt, as a PHC string.
pub async fn hash(password: String) -> Result<String, HashError> {
    gated(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| HashError::Failed(e.to_string()))
    })
    .await?
    .unwrap_or_else(|| Err(HashError::Failed("the hashing task panicked".to_owned())))
}

/// Checks `password` against `stored`, or against a dummy hash when there is no account, so
/// the answer takes as long whether or not the username exists.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, Busy> {
    let checked = gated(move || {
        let exists = stored.is_some();
        let phc = stored.unwrap_or_else(|| dummy_hash().to_owned());
        let ok = PasswordHash::new(&phc)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && exists
    })
    .await?;
    Ok(checked.unwrap_or(false))
}

/// Computes the dummy hash ahead of the first login that needs it.
pub fn warm_up() {
    dummy_hash();
}

/// A hash of a random password with the default parameters, made once per process.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut random = [0u8; 16];
        let _ = getrandom::fill(&mut random);
        Argon2::default()
            .hash_password(&random)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hash_and_verify() {
        let phc = super::hash("correct horse".into()).await.expect("hash");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert_eq!(
            super::verify("correct horse".into(), Some(phc.clone())).await,
            Ok(true)
        );
        assert_eq!(super::verify("wrong".into(), Some(phc)).await, Ok(false));
        assert_eq!(super::verify("anything".into(), None).await, Ok(false));
    }
}
