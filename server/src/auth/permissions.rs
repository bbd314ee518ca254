//! Who may do what: the one table of roles and permissions, and the permissions as types
//! for the edge's `Require<P>` extractor (a handler that takes `Require<Operate>` cannot
//! run for a tenant).

use converge_api::Role;

/// Something a role may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See every host, VM and migration.
    ViewFleet,
    /// Start, steer and abort migrations.
    Operate,
    /// Read the audit log.
    ReadAudit,
    /// Create, list and revoke kiosk tokens.
    ManageKiosk,
    /// See the user's own projects' VMs, in plain language, without hosts.
    ViewOwnVms,
}

/// The table: whether `role` has `permission`.
pub fn allows(role: Role, permission: Permission) -> bool {
    use Permission::*;
    match (role, permission) {
        (Role::Admin, ViewOwnVms) => false,
        (Role::Admin, ViewFleet | Operate | ReadAudit | ManageKiosk) => true,
        (Role::Operator, ViewFleet | Operate) => true,
        (Role::Operator, ReadAudit | ManageKiosk | ViewOwnVms) => false,
        (Role::Kiosk, ViewFleet) => true,
        (Role::Kiosk, Operate | ReadAudit | ManageKiosk | ViewOwnVms) => false,
        (Role::Tenant, ViewOwnVms) => true,
        (Role::Tenant, ViewFleet | Operate | ReadAudit | ManageKiosk) => false,
    }
}

/// A permission as a type, for [`Require`].
pub trait Needed {
    /// The permission.
    const PERMISSION: Permission;
}

/// Marker: [`Permission::ViewFleet`].
#[derive(Debug)]
pub struct ViewFleet;
impl Needed for ViewFleet {
    const PERMISSION: Permission = Permission::ViewFleet;
}

/// Marker: [`Permission::Operate`].
#[derive(Debug)]
pub struct Operate;
impl Needed for Operate {
    const PERMISSION: Permission = Permission::Operate;
}

/// Marker: [`Permission::ReadAudit`].
#[derive(Debug)]
pub struct ReadAudit;
impl Needed for ReadAudit {
    const PERMISSION: Permission = Permission::ReadAudit;
}

/// Marker: [`Permission::ManageKiosk`].
#[derive(Debug)]
pub struct ManageKiosk;
impl Needed for ManageKiosk {
    const PERMISSION: Permission = Permission::ManageKiosk;
}

/// Marker: [`Permission::ViewOwnVms`].
#[derive(Debug)]
pub struct ViewOwnVms;
impl Needed for ViewOwnVms {
    const PERMISSION: Permission = Permission::ViewOwnVms;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admins_and_operators_operate() {
        for role in Role::ALL {
            assert_eq!(
                allows(role, Permission::Operate),
                role.can_operate(),
                "{role}"
            );
        }
    }

    #[test]
    fn only_admins_read_the_audit_log() {
        for role in Role::ALL {
            assert_eq!(
                allows(role, Permission::ReadAudit),
                role == Role::Admin,
                "{role}"
            );
        }
    }

    #[test]
    fn only_admins_manage_kiosk_tokens_and_only_tenants_see_their_own_vms() {
        for role in Role::ALL {
            assert_eq!(allows(role, Permission::ManageKiosk), role == Role::Admin);
            assert_eq!(allows(role, Permission::ViewOwnVms), role == Role::Tenant);
        }
    }

    #[test]
    fn tenants_do_not_view_the_fleet() {
        for role in Role::ALL {
            assert_eq!(
                allows(role, Permission::ViewFleet),
                role.sees_whole_fleet(),
                "{role}"
            );
        }
    }
}
