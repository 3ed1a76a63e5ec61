//! The decision step: from who is calling, what names the target and the request's `Forwarded`
//! headers, over the current snapshots (allowlist, policy), to a [`Decision`] or an [`Error`].
//! Pure: no I/O, no metrics, no logs — HTTP requests and opaque sessions both call [`decide`],
//! then [`super::conn`] / [`super::http`] count and log what it returned.

use identity::IdentityName;

use super::forwarded;
use crate::control::policy::{Policy, Verdict};
use crate::metrics::{Allowed, Label};
use crate::target::{self, Suffixes, Target};

/// What names the target of a session or request.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A target parsed and checked before (an error when it was refused): a transport
    /// header's, once for the whole session, or the one the session's previous request named
    /// with the same text.
    Checked(Result<&'a Target, &'a target::Error>),
    /// The `l5d-dst-override` header's value.
    Override(&'a [u8]),
    /// The request URI's authority (HTTP/2 `:authority`, HTTP/1 absolute form).
    Authority(&'a str),
    /// The `Host` header's value.
    Host(&'a [u8]),
    /// Nothing names a target.
    Nothing,
}

/// The snapshots a decision is made over.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    /// The gateway's own identity (loops).
    pub gateway: &'a IdentityName,
    /// The target allowlist.
    pub suffixes: &'a Suffixes,
    /// The authorization policy in use.
    pub policy: &'a Policy,
}

/// Where the traffic may go, and what allowed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The checked target.
    pub target: Target,
    /// The rule or default that allowed it (`authz_kind="audit"` for an audit-mode denial).
    pub allowed: Allowed,
    /// Denied by the policy but let through because it is in audit mode (counted and logged).
    pub audit_denied: bool,
}

/// Why traffic may not go where it asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Nothing names a target.
    #[error("request has no l5d-dst-override, :authority or Host")]
    NoTarget,
    /// The target header is not valid UTF-8 text.
    #[error("target header is not valid text")]
    TargetNotText,
    /// The target is malformed or not allowed.
    #[error(transparent)]
    Target(#[from] target::Error),
    /// The caller is the gateway itself, or a `Forwarded` element says it passed here already.
    #[error("gateway loop detected")]
    Loop,
    /// The policy does not allow this caller to reach this target.
    #[error("unauthorized request on route")]
    Unauthorized {
        /// The target refused.
        target: Target,
        /// The policy's default (the `srv_name` label).
        srv_name: Label,
    },
}

/// Decides where `peer`'s traffic named by `source` may go: the caller is not the gateway, the
/// target parses and is allowed, no `Forwarded` element was written by this gateway, and the
/// policy allows the pair.
///
/// # Errors
/// The first check that fails, in that order.
pub fn decide<'f>(
    peer: &IdentityName,
    source: Source<'_>,
    forwarded: impl IntoIterator<Item = &'f [u8]>,
    snapshot: &Snapshot<'_>,
) -> Result<Decision, Error> {
    if peer == snapshot.gateway {
        return Err(Error::Loop);
    }
    let target = target(source, snapshot.suffixes)?;
    let gateway = snapshot.gateway.as_str();
    if forwarded
        .into_iter()
        .any(|value| forwarded::names_by(value, gateway))
    {
        return Err(Error::Loop);
    }
    authorize(peer, target, snapshot.policy)
}

/// The target `source` names, checked against the allowlist.
///
/// # Errors
/// `NoTarget`, `TargetNotText`, or the target's own error.
pub fn target(source: Source<'_>, suffixes: &Suffixes) -> Result<Target, Error> {
    fn text(bytes: &[u8]) -> Result<&str, Error> {
        std::str::from_utf8(bytes).map_err(|_| Error::TargetNotText)
    }
    Ok(match source {
        Source::Checked(Ok(target)) => target.clone(),
        Source::Checked(Err(e)) => return Err(Error::Target(e.clone())),
        Source::Override(value) => Target::parse(text(value)?, suffixes)?,
        Source::Authority(authority) => Target::parse(authority, suffixes)?,
        Source::Host(value) => Target::parse(text(value)?, suffixes)?,
        Source::Nothing => return Err(Error::NoTarget),
    })
}

fn authorize(peer: &IdentityName, target: Target, policy: &Policy) -> Result<Decision, Error> {
    let srv_name = policy.default_name();
    let (allowed, audit_denied) = match policy.decide(peer, &target) {
        Verdict::Allow { kind, name } => (
            Allowed {
                srv_name: srv_name.clone(),
                kind,
                name,
            },
            false,
        ),
        Verdict::AuditDeny => (
            Allowed {
                srv_name: srv_name.clone(),
                kind: "audit",
                name: srv_name.clone(),
            },
            true,
        ),
        Verdict::Deny => {
            return Err(Error::Unauthorized {
                target,
                srv_name: srv_name.clone(),
            });
        }
    };
    Ok(Decision {
        target,
        allowed,
        audit_denied,
    })
}

#[cfg(test)]
mod tests;
