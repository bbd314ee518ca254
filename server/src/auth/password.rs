//! Password checks: argon2 in memory the server owns, a few at a time, behind a short line.
//!
//! Argon2 is meant to be expensive: each check fills `m_cost` KiB (19 MiB with the
//! defaults) and takes tens of milliseconds of a core. Under a burst of sign-ins three
//! things keep that bounded:
//! - at most [`PasswordChecks::slots`] checks run at once, each in a memory area taken
//!   from a pool and given back after, so the hashes' memory is exactly
//!   `slots × the largest m_cost` and is allocated once (letting argon2 allocate per
//!   check left freed areas in the allocator's per-thread arenas: a flood of 100 took
//!   the server from 22 MiB to over a gigabyte);
//! - at most `line` more sign-ins wait for a slot; past that a sign-in is refused at once
//!   with "busy" (429 with `Retry-After`), before it holds anything;
//! - a waiting sign-in holds nothing but its request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use password_hash::{Output, PasswordHash};
use tokio::sync::Semaphore;

use super::users::{User, UserDirectory};

/// Why a password was not checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Every slot is in use and the line is full: try again in a moment.
    #[error("the server is busy checking other sign-ins")]
    Busy,
    /// The check itself could not run (a task failed); the cause is for the log.
    #[error("password check failed: {0}")]
    Failed(String),
}

/// The password-checking slots, their memory, and the line in front of them.
#[derive(Debug)]
pub struct PasswordChecks {
    slots: usize,
    running: Arc<Semaphore>,
    /// Sign-ins waiting for a slot or in one.
    in_line: AtomicUsize,
    max_in_line: usize,
    /// Memory areas not in use, each `blocks` long.
    memory: Mutex<Vec<Vec<Block>>>,
    blocks: usize,
    /// Checks running now, the most ever at once, and memory areas ever allocated: what
    /// the bound above promises, for tests and the flood benchmark.
    running_now: AtomicUsize,
    peak_running: AtomicUsize,
    peak_in_line: AtomicUsize,
    areas: AtomicUsize,
}

/// A place in the line (or in a slot); given up when dropped, whatever happened.
struct InLine(Arc<PasswordChecks>);

impl Drop for InLine {
    fn drop(&mut self) {
        self.0.in_line.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordChecks {
    /// `slots` checks at once, `line` more waiting, with memory for the largest hash in
    /// `users`.
    pub fn new(slots: usize, line: usize, users: &UserDirectory) -> Self {
        let slots = slots.max(1);
        Self {
            slots,
            running: Arc::new(Semaphore::new(slots)),
            in_line: AtomicUsize::new(0),
            max_in_line: slots + line,
            memory: Mutex::new(Vec::new()),
            blocks: users.largest_memory_blocks(),
            running_now: AtomicUsize::new(0),
            peak_running: AtomicUsize::new(0),
            peak_in_line: AtomicUsize::new(0),
            areas: AtomicUsize::new(0),
        }
    }

    /// How many checks run at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The most memory the checks hold, in bytes: slots × the largest memory cost.
    pub fn memory_bound_bytes(&self) -> usize {
        self.slots * self.blocks * Block::SIZE
    }

    /// The most checks that ever ran at once (never more than [`Self::slots`]).
    pub fn peak_running(&self) -> usize {
        self.peak_running.load(Ordering::Acquire)
    }

    /// The most sign-ins that were ever waiting or being checked at once (never more
    /// than the slots and the line together).
    pub fn peak_in_line(&self) -> usize {
        self.peak_in_line.load(Ordering::Acquire)
    }

    /// Memory areas allocated so far (never more than [`Self::slots`]).
    pub fn memory_areas(&self) -> usize {
        self.areas.load(Ordering::Acquire)
    }

    /// The account if `password` is `username`'s password, else `None`; one argon2 check
    /// either way (an unknown name is checked against a dummy hash, so timing does not
    /// tell which names exist). `Busy` at once when the line is full.
    pub async fn verify(
        self: &Arc<Self>,
        users: Arc<UserDirectory>,
        username: String,
        password: String,
    ) -> Result<Option<Arc<User>>, CheckError> {
        let ahead = self.in_line.fetch_add(1, Ordering::AcqRel);
        if ahead >= self.max_in_line {
            self.in_line.fetch_sub(1, Ordering::AcqRel);
            return Err(CheckError::Busy);
        }
        self.peak_in_line.fetch_max(ahead + 1, Ordering::AcqRel);
        let in_line = InLine(self.clone());
        let permit = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|err| CheckError::Failed(err.to_string()))?;
        let checks = self.clone();
        // A blocking task runs to its end even if this request is dropped meanwhile: it
        // owns its slot and place in line, so neither is freed before its memory is back.
        tokio::task::spawn_blocking(move || {
            let _held = (in_line, permit);
            let running = checks.running_now.fetch_add(1, Ordering::AcqRel) + 1;
            checks.peak_running.fetch_max(running, Ordering::AcqRel);
            let mut memory = checks.take_memory();
            let user = users.verify(&username, &password, &mut memory);
            checks.give_back(memory);
            checks.running_now.fetch_sub(1, Ordering::AcqRel);
            user
        })
        .await
        .map_err(|err| CheckError::Failed(err.to_string()))
    }

    fn take_memory(&self) -> Vec<Block> {
        let pooled = self.lock().pop();
        pooled.unwrap_or_else(|| {
            self.areas.fetch_add(1, Ordering::AcqRel);
            vec![Block::new(); self.blocks]
        })
    }

    fn give_back(&self, memory: Vec<Block>) {
        let mut pool = self.lock();
        if pool.len() < self.slots {
            pool.push(memory);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// argon2 blocks (1 KiB each) a PHC hash needs, or `None` when it is not a usable argon2
/// hash.
pub(crate) fn memory_blocks(phc: &str) -> Option<usize> {
    let hash = PasswordHash::new(phc).ok()?;
    Params::try_from(&hash).ok().map(|p| p.block_count())
}

/// Whether `password` matches the argon2 PHC string `phc`, computed in `memory` (which
/// must hold at least [`memory_blocks`] blocks). The comparison is constant-time.
pub(crate) fn matches(phc: &str, password: &str, memory: &mut [Block]) -> bool {
    let mut check = || -> Option<bool> {
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
        let version = hash
            .version
            .map(Version::try_from)
            .transpose()
            .ok()?
            .unwrap_or_default();
        let params = Params::try_from(&hash).ok()?;
        let expected = hash.hash?;
        let mut salt = [0u8; 64];
        let salt = hash.salt?.decode_b64(&mut salt).ok()?;
        let mut out = vec![0u8; expected.len()];
        let blocks = memory.get_mut(..params.block_count())?;
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, blocks)
            .ok()?;
        // `Output`'s equality is constant-time.
        Some(Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_password;

    #[test]
    fn a_hash_checked_in_our_memory_agrees_with_argon2() {
        let phc = hash_password("correct horse").unwrap();
        let mut memory = vec![Block::new(); memory_blocks(&phc).unwrap()];
        assert!(matches(&phc, "correct horse", &mut memory));
        assert!(!matches(&phc, "correct horse ", &mut memory));
        // Too little memory is a refusal, never a panic.
        assert!(!matches(&phc, "correct horse", &mut memory[..8]));
        assert!(!matches("not a hash", "x", &mut memory));
    }

    #[test]
    fn the_default_hash_needs_19_mib() {
        let phc = hash_password("x").unwrap();
        assert_eq!(memory_blocks(&phc), Some(19 * 1024));
    }
}
