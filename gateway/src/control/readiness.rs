//! `Readiness`: what `/ready` answers — listeners bound, credentials valid now, an unexpired
//! trust anchor, the Destination controller reached once (when configured), not draining.
//! Written by the app, the credential watcher and the drain.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::watch;

use identity::source::unix_seconds;

/// What `/ready` reports on.
#[derive(Debug)]
pub struct Readiness {
    bound: AtomicBool,
    draining: AtomicBool,
    cert_not_before: AtomicI64,
    cert_not_after: AtomicI64,
    anchors_not_after: AtomicI64,
    /// Whether the Destination controller was ever reached (`Err`: the last failure).
    destination: Mutex<Option<watch::Receiver<Result<(), String>>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            bound: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            cert_not_before: AtomicI64::new(i64::MAX),
            cert_not_after: AtomicI64::new(i64::MIN),
            anchors_not_after: AtomicI64::new(i64::MIN),
            destination: Mutex::new(None),
        }
    }
}

impl Readiness {
    /// Records that the data listener is bound and accepting.
    pub fn set_bound(&self) {
        self.bound.store(true, Ordering::Release);
    }

    /// Follows the Destination controller: not ready until it was reached once (after that, an
    /// outage is served from the last answers, and readiness stays).
    pub fn follow_destination(&self, reached: watch::Receiver<Result<(), String>>) {
        *self
            .destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reached);
    }

    /// Records that the gateway is draining: `/ready` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Records the validity of the credentials in use (Unix seconds).
    pub fn set_credentials(
        &self,
        not_before: SystemTime,
        not_after: SystemTime,
        anchors_not_after: i64,
    ) {
        self.cert_not_before
            .store(unix_seconds(not_before), Ordering::Release);
        self.cert_not_after
            .store(unix_seconds(not_after), Ordering::Release);
        self.anchors_not_after
            .store(anchors_not_after, Ordering::Release);
    }

    /// The validity of the credentials in use (Unix seconds): not before, not after.
    pub fn cert_validity(&self) -> (i64, i64) {
        (
            self.cert_not_before.load(Ordering::Acquire),
            self.cert_not_after.load(Ordering::Acquire),
        )
    }

    /// `Ok` when ready, else the reason.
    ///
    /// # Errors
    /// A one-line reason.
    pub fn check(&self) -> Result<(), String> {
        let now = unix_seconds(SystemTime::now());
        if self.draining.load(Ordering::Acquire) {
            return Err("draining".to_owned());
        }
        if !self.bound.load(Ordering::Acquire) {
            return Err("listeners not bound yet".to_owned());
        }
        let not_after = self.cert_not_after.load(Ordering::Acquire);
        if not_after == i64::MIN {
            return Err("no credentials loaded".to_owned());
        }
        if now > not_after {
            return Err(format!("certificate expired {}s ago", now - not_after));
        }
        if now < self.cert_not_before.load(Ordering::Acquire) {
            return Err("certificate not valid yet".to_owned());
        }
        if now > self.anchors_not_after.load(Ordering::Acquire) {
            return Err("every trust anchor has expired".to_owned());
        }
        if let Some(reached) = &*self
            .destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            && let Err(e) = &*reached.borrow()
        {
            return Err(format!(
                "no answer from the destination controller yet: {e}"
            ));
        }
        Ok(())
    }
}
