//! Every path of the HTTP API, in one place: the server's route table is built from the
//! patterns (`{name}` marks a path parameter, as axum spells it), the dashboard requests
//! them, and the builders below fill a pattern's parameter. The tests check each builder
//! against its pattern, so the two cannot drift apart.

/// Where the API lives; everything else is the dashboard's files.
pub const PREFIX: &str = "/api";

/// `GET`: is the server up (public).
pub const HEALTH: &str = "/api/health";
/// `POST`: sign in.
pub const LOGIN: &str = "/api/login";
/// `POST`: sign out.
pub const LOGOUT: &str = "/api/logout";
/// `GET`: who the session belongs to.
pub const ME: &str = "/api/me";
/// `GET`: the live event stream (server-sent events).
pub const EVENTS: &str = "/api/events";
/// `GET`: the hosts.
pub const HOSTS: &str = "/api/hosts";
/// `GET`: the VMs.
pub const VMS: &str = "/api/vms";
/// `GET`: migrations in memory; `POST`: start one.
pub const MIGRATIONS: &str = "/api/migrations";
/// `GET`: one migration with its series; `PATCH`: move one lever.
pub const MIGRATION: &str = "/api/migrations/{id}";
/// `POST`: abort the migration.
pub const MIGRATION_ABORT: &str = "/api/migrations/{id}/abort";
/// `GET`: past migrations, newest first.
pub const HISTORY: &str = "/api/history";
/// `GET`: the presets.
pub const PRESETS: &str = "/api/presets";
/// `GET`: the audit log, newest first.
pub const AUDIT: &str = "/api/audit";
/// `GET`: kiosk tokens; `POST`: make one.
pub const KIOSK_TOKENS: &str = "/api/kiosk-tokens";
/// `DELETE`: revoke a kiosk token.
pub const KIOSK_TOKEN: &str = "/api/kiosk-tokens/{id}";
/// `POST`: a wall screen signs in with its token.
pub const KIOSK_SESSION: &str = "/api/kiosk/session";
/// `GET`: a tenant's own VMs.
pub const TENANT_VMS: &str = "/api/tenant/vms";
/// `GET`: one of a tenant's VMs with its past moves.
pub const TENANT_VM: &str = "/api/tenant/vms/{uuid}";

/// [`MIGRATION`] of migration `id`.
pub fn migration(id: &str) -> String {
    format!("/api/migrations/{id}")
}

/// [`MIGRATION_ABORT`] of migration `id`.
pub fn migration_abort(id: &str) -> String {
    format!("/api/migrations/{id}/abort")
}

/// [`KIOSK_TOKEN`] of token `id`.
pub fn kiosk_token(id: impl std::fmt::Display) -> String {
    format!("/api/kiosk-tokens/{id}")
}

/// [`TENANT_VM`] of the VM `uuid`.
pub fn tenant_vm(uuid: &str) -> String {
    format!("/api/tenant/vms/{uuid}")
}

/// `pattern` under [`PREFIX`] (`/api/me` → `/me`), for a router nested there. Evaluated
/// in constants: a pattern outside the API fails the build.
pub const fn under_prefix(pattern: &'static str) -> &'static str {
    let (head, rest) = pattern.split_at(PREFIX.len());
    assert!(
        head.len() == PREFIX.len() && eq(head.as_bytes(), PREFIX.as_bytes()),
        "an API path starts with /api"
    );
    rest
}

const fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_builder_fills_its_own_pattern() {
        assert_eq!(migration("{id}"), MIGRATION);
        assert_eq!(migration_abort("{id}"), MIGRATION_ABORT);
        assert_eq!(kiosk_token("{id}"), KIOSK_TOKEN);
        assert_eq!(tenant_vm("{uuid}"), TENANT_VM);
        assert_eq!(migration("m1"), "/api/migrations/m1");
        assert_eq!(kiosk_token(7), "/api/kiosk-tokens/7");
    }

    #[test]
    fn paths_under_the_prefix_keep_their_tail() {
        assert_eq!(under_prefix(ME), "/me");
        assert_eq!(under_prefix(MIGRATION_ABORT), "/migrations/{id}/abort");
    }
}
