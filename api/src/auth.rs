//! Sign-in, roles and errors.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Answer of `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Health {
    /// Always `"ok"` when the server answers at all.
    pub status: String,
}

/// Body of `POST /api/login`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account name, as written in the server's configuration.
    pub username: String,
    /// The password in clear; only ever sent over the login request.
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a signed-in user may do; the server enforces it, the dashboard only mirrors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything an operator may do, plus kiosk tokens and the audit log.
    Admin,
    /// Every host, VM and migration; starts, steers and aborts migrations.
    Operator,
    /// Read-only status of the VMs of the user's own projects.
    Tenant,
    /// Read-only wall board of every live migration.
    Kiosk,
}

wire_names!(Role {
    Admin => "admin",
    Operator => "operator",
    Tenant => "tenant",
    Kiosk => "kiosk",
});

impl Role {
    /// Every role, in order of decreasing power.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Tenant, Role::Kiosk];

    /// The role's name as written in configuration and on the wire.
    pub fn as_str(self) -> &'static str {
        self.wire_name()
    }

    /// Whether this role may start, steer and abort migrations.
    pub fn can_operate(self) -> bool {
        matches!(self, Role::Admin | Role::Operator)
    }

    /// Whether this role sees hosts and every VM rather than only its projects' VMs.
    pub fn sees_whole_fleet(self) -> bool {
        !matches!(self, Role::Tenant)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Answer of `GET /api/me` and of a successful login: who the session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Me {
    /// The account name.
    pub username: String,
    /// What the account may do.
    pub role: Role,
    /// Projects whose VMs a tenant may see; empty for the other roles.
    pub projects: Vec<String>,
}

/// Body of every error answer: one sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct ErrorBody {
    /// What went wrong and, where it helps, what to do about it.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_request_debug_hides_the_password() {
        let request = LoginRequest {
            username: "ada".into(),
            password: "hunter2-very-secret".into(),
        };
        let shown = format!("{request:?}");
        assert!(shown.contains("ada"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn roles_use_their_configuration_names_on_the_wire() {
        for role in Role::ALL {
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), role);
        }
    }

    #[test]
    fn login_request_refuses_unknown_fields() {
        let err =
            serde_json::from_str::<LoginRequest>(r#"{"username":"a","password":"b","admin":true}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn only_admins_and_operators_operate() {
        let operating: Vec<Role> = Role::ALL.into_iter().filter(|r| r.can_operate()).collect();
        assert_eq!(operating, vec![Role::Admin, Role::Operator]);
        assert!(!Role::Tenant.sees_whole_fleet());
        assert!(Role::Kiosk.sees_whole_fleet());
    }
}
