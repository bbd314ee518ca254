//! The accounts from the configuration and password checking.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::{Argon2, Block, PasswordHasher};
use converge_api::{KioskToken, Me, Role};
use password_hash::{PasswordHash, SaltString, rand_core::OsRng};

use crate::config::UserConfig;

/// One account that may sign in.
#[derive(Debug)]
pub struct User {
    /// The name typed at sign-in.
    pub username: String,
    /// What the account may do.
    pub role: Role,
    /// Projects a tenant may see.
    pub projects: Vec<String>,
    /// The salt of the current password hash. A session remembers it, so changing the
    /// password (which always draws a new salt) ends every session of the old one.
    pub(crate) credential_tag: String,
    password_hash: String,
}

impl User {
    /// The stand-in account of a wall screen signed in with kiosk token `token`.
    pub fn kiosk(token: &KioskToken) -> Self {
        Self {
            username: format!("kiosk:{}", token.label),
            role: Role::Kiosk,
            projects: Vec::new(),
            credential_tag: String::new(),
            password_hash: String::new(),
        }
    }

    /// The account as the API describes it.
    pub fn me(&self) -> Me {
        Me {
            username: self.username.clone(),
            role: self.role,
            projects: self.projects.clone(),
        }
    }
}

/// All accounts, by username.
#[derive(Debug)]
pub struct UserDirectory {
    users: HashMap<String, Arc<User>>,
    /// Checked for unknown usernames, so that they cost as much time as known ones and
    /// the answer's timing does not tell which names exist.
    dummy_hash: String,
}

impl UserDirectory {
    /// Builds the directory from validated configuration.
    pub fn new(users: &[UserConfig]) -> Result<Self, password_hash::Error> {
        let users = users
            .iter()
            .map(|u| {
                let salt = PasswordHash::new(&u.password_hash)?
                    .salt
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default();
                let user = User {
                    username: u.username.clone(),
                    role: u.role,
                    projects: u.projects.clone(),
                    credential_tag: salt,
                    password_hash: u.password_hash.clone(),
                };
                Ok((u.username.clone(), Arc::new(user)))
            })
            .collect::<Result<_, password_hash::Error>>()?;
        let dummy_hash = hash_password("converge: the password of no one")?;
        Ok(Self { users, dummy_hash })
    }

    /// The account with this exact name, if there is one.
    pub fn get(&self, username: &str) -> Option<&Arc<User>> {
        self.users.get(username)
    }

    /// The account if `password` is its password, computed in `memory` (see
    /// [`super::PasswordChecks`], which owns it). Costs one argon2 verification whether or
    /// not the user exists: call it off the async executor.
    pub(crate) fn verify(
        &self,
        username: &str,
        password: &str,
        memory: &mut [Block],
    ) -> Option<Arc<User>> {
        let user = self.users.get(username);
        let phc = user.map_or(self.dummy_hash.as_str(), |u| u.password_hash.as_str());
        let matches = super::password::matches(phc, password, memory);
        if matches { user.cloned() } else { None }
    }

    /// argon2 blocks the most expensive hash here needs: the memory one check takes.
    pub(crate) fn largest_memory_blocks(&self) -> usize {
        self.users
            .values()
            .map(|u| u.password_hash.as_str())
            .chain([self.dummy_hash.as_str()])
            .filter_map(super::password::memory_blocks)
            .max()
            .unwrap_or(0)
    }
}

/// Hashes a password with argon2id and a fresh random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(dir: &UserDirectory, name: &str, password: &str) -> Option<Arc<User>> {
        let mut memory = vec![Block::new(); dir.largest_memory_blocks()];
        dir.verify(name, password, &mut memory)
    }

    fn directory() -> UserDirectory {
        let users = vec![UserConfig {
            username: "ada".into(),
            password_hash: hash_password("correct horse").unwrap(),
            role: Role::Admin,
            projects: vec![],
        }];
        UserDirectory::new(&users).unwrap()
    }

    #[test]
    fn the_right_password_finds_the_user() {
        let user = verify(&directory(), "ada", "correct horse").unwrap();
        assert_eq!(user.role, Role::Admin);
    }

    #[test]
    fn a_wrong_password_or_unknown_user_finds_nobody() {
        let dir = directory();
        assert!(verify(&dir, "ada", "correct horse ").is_none());
        assert!(verify(&dir, "ADA", "correct horse").is_none());
        assert!(verify(&dir, "bob", "correct horse").is_none());
    }

    #[test]
    fn hashes_are_salted_argon2id() {
        let a = hash_password("same").unwrap();
        let b = hash_password("same").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"), "{a}");
    }
}
