//! Who may sign in and do what: accounts and password checks, the sign-in throttle, the
//! session store and its live streams, and the permission table. (Sign-in, sign-out and
//! the extractors that guard every route are the edge's: `http::auth`.)

mod password;
mod permissions;
mod sessions;
mod throttle;
mod users;

pub use password::{CheckError, PasswordChecks};
pub use permissions::{
    ManageKiosk, Needed, Operate, Permission, ReadAudit, ViewFleet, ViewOwnVms, allows,
};
pub use sessions::{Sessions, StreamOwner, StreamTicket, TooManyStreams};
pub use throttle::LoginThrottle;
pub(crate) use throttle::network_of;
pub use users::{User, UserDirectory, hash_password};

use sha2::{Digest, Sha256};

/// The SHA-256 of a bearer secret, as lower-case hex: how kiosk tokens are stored and how
/// the metrics token is configured. (Such secrets are long and random, so a fast hash is
/// enough; passwords get argon2.)
pub(crate) fn secret_sha256(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Bytes as lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
