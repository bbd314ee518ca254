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

/// `GET`: drains, running and past; `POST`: plan one (`dry_run`) or start it.
pub const DRAINS: &str = "/api/drains";
/// `GET`: one drain.
pub const DRAIN: &str = "/api/drains/{id}";
/// `POST`: pause a drain (running migrations finish, no new ones start).
pub const DRAIN_PAUSE: &str = "/api/drains/{id}/pause";
/// `POST`: resume a paused drain.
pub const DRAIN_RESUME: &str = "/api/drains/{id}/resume";
/// `POST`: cancel a drain (running migrations are aborted; VMs stay where they are).
pub const DRAIN_CANCEL: &str = "/api/drains/{id}/cancel";
/// `POST` `{"action": "skip" | "forward"}`: one VM of a drain.
pub const DRAIN_VM: &str = "/api/drains/{id}/vms/{uuid}";

/// [`DRAIN`] of drain `id`.
pub fn drain(id: &str) -> String {
    format!("/api/drains/{id}")
}

/// [`DRAIN_PAUSE`], [`DRAIN_RESUME`] or [`DRAIN_CANCEL`] of drain `id`: `what` is
/// `pause`, `resume` or `cancel`.
pub fn drain_control(id: &str, what: &str) -> String {
    format!("/api/drains/{id}/{what}")
}

/// [`DRAIN_VM`] of VM `uuid` in drain `id`.
pub fn drain_vm(id: &str, uuid: &str) -> String {
    format!("/api/drains/{id}/vms/{uuid}")
}

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
        assert_eq!(drain("{id}"), DRAIN);
        assert_eq!(drain_control("{id}", "pause"), DRAIN_PAUSE);
        assert_eq!(drain_control("{id}", "resume"), DRAIN_RESUME);
        assert_eq!(drain_control("{id}", "cancel"), DRAIN_CANCEL);
        assert_eq!(drain_vm("{id}", "{uuid}"), DRAIN_VM);
        assert_eq!(migration("m1"), "/api/migrations/m1");
        assert_eq!(kiosk_token(7), "/api/kiosk-tokens/7");
    }

    #[test]
    fn paths_under_the_prefix_keep_their_tail() {
        assert_eq!(under_prefix(ME), "/me");
        assert_eq!(under_prefix(MIGRATION_ABORT), "/migrations/{id}/abort");
    }
}
