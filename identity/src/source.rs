//! Credential files and their reloading: a [`FileSource`] names the certificate, key and
//! trust-anchor files; a [`Watcher`] polls them and hands out newly validated [`Material`].
//!
//! Polling reads the files' bytes, so every way of replacing them is seen: in-place writes,
//! `mv` over the file, and Kubernetes' secret volume update (a new timestamped directory, then
//! an atomic swap of the `..data` symlink). A change is only validated once the bytes have been
//! the same on two polls in a row, so a half-written set (new certificate, old key) is not
//! reported as an error.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::{Credentials, Error, IdentityName, TrustAnchors};

/// Where trust anchors come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnchorSource {
    /// A PEM bundle file (watched).
    File(PathBuf),
    /// PEM text given at startup (`LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`; never changes).
    Pem(String),
}

impl AnchorSource {
    /// What to call it in messages.
    pub fn what(&self) -> String {
        match self {
            AnchorSource::File(path) => path.display().to_string(),
            AnchorSource::Pem(_) => "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS".to_owned(),
        }
    }

    fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            AnchorSource::File(path) => {
                std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))
            }
            AnchorSource::Pem(text) => Ok(text.clone().into_bytes()),
        }
    }

    /// Reads and parses the bundle now.
    ///
    /// # Errors
    /// An unreadable file, bad PEM, or no usable root.
    pub fn load(&self) -> Result<TrustAnchors, Error> {
        let pem = self.read().map_err(|reason| Error::Parse {
            what: "trust anchors".to_owned(),
            reason,
        })?;
        TrustAnchors::from_pem(&self.what(), &pem)
    }
}

/// The files that hold the gateway's credentials.
#[derive(Clone, Debug)]
pub struct FileSource {
    /// Leaf certificate followed by its intermediates (PEM).
    pub cert: PathBuf,
    /// PKCS#8, SEC1 or PKCS#1 private key (PEM).
    pub key: PathBuf,
    /// The trust-anchor bundle.
    pub anchors: AnchorSource,
}

/// Validated trust anchors and credentials, ready to serve.
#[derive(Clone, Debug)]
pub struct Material {
    /// The trust anchors.
    pub anchors: TrustAnchors,
    /// The gateway's credentials, validated against `anchors`.
    pub credentials: Credentials,
}

/// The raw bytes of one read of the files.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    cert: Result<Vec<u8>, String>,
    key: Result<Vec<u8>, String>,
    anchors: Result<Vec<u8>, String>,
}

impl FileSource {
    fn read(&self) -> Snapshot {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
        Snapshot {
            cert: read(&self.cert),
            key: read(&self.key),
            anchors: self.anchors.read(),
        }
    }

    fn validate(&self, snapshot: &Snapshot, now: SystemTime) -> Result<Material, Error> {
        let unreadable = |e: &String| Error::Parse {
            what: "credentials".to_owned(),
            reason: e.clone(),
        };
        let anchors_pem = snapshot.anchors.as_ref().map_err(unreadable)?;
        let anchors = TrustAnchors::from_pem(&self.anchors.what(), anchors_pem)?;
        let cert = snapshot.cert.as_ref().map_err(unreadable)?;
        let key = snapshot.key.as_ref().map_err(unreadable)?;
        let credentials = Credentials::from_pem_at(
            &self.cert.display().to_string(),
            cert,
            &self.key.display().to_string(),
            key,
            &anchors,
            now,
        )?;
        Ok(Material {
            anchors,
            credentials,
        })
    }

    /// Reads and validates the files now.
    ///
    /// # Errors
    /// Unreadable files, bad PEM, a key that does not match, a chain that does not verify to
    /// the anchors, expiry.
    pub fn load(&self) -> Result<Material, Error> {
        self.validate(&self.read(), SystemTime::now())
    }

    /// Loads the files and returns a [`Watcher`] that reports changes from exactly what was
    /// loaded (new material must name the same identity).
    ///
    /// # Errors
    /// As [`FileSource::load`].
    pub fn load_and_watch(self) -> Result<(Material, Watcher), Error> {
        self.load_and_watch_at(SystemTime::now())
    }

    /// As [`FileSource::load_and_watch`], validating the files as of `now` (a gateway started
    /// then: tests of credentials that have expired since). Changes are validated when seen.
    ///
    /// # Errors
    /// As [`FileSource::load`], at `now`.
    pub fn load_and_watch_at(self, now: SystemTime) -> Result<(Material, Watcher), Error> {
        let snapshot = self.read();
        let material = self.validate(&snapshot, now)?;
        let watcher = Watcher {
            identity: material.credentials.identity().clone(),
            source: self,
            reads: Settle::new(snapshot),
        };
        Ok((material, watcher))
    }
}

/// Watches a [`FileSource`] by polling; see the module documentation.
#[derive(Debug)]
pub struct Watcher {
    source: FileSource,
    identity: IdentityName,
    reads: Settle<Snapshot>,
}

/// Successive reads of something polled (file bytes): a new value is reported once it has been
/// read the same twice in a row (a finished write), and only once.
#[derive(Debug)]
pub struct Settle<T> {
    /// The last value reported (or the first one read): not reported again.
    settled: T,
    /// A changed value seen once, waiting for a second identical read.
    pending: Option<T>,
}

impl<T: PartialEq> Settle<T> {
    /// Starts from `current`, which is taken as already handled.
    pub fn new(current: T) -> Self {
        Self {
            settled: current,
            pending: None,
        }
    }

    /// The value just read: `Some` when it is a settled change to report.
    pub fn observe(&mut self, now: T) -> Option<&T> {
        if now == self.settled {
            self.pending = None;
            return None;
        }
        if self.pending.as_ref() != Some(&now) {
            self.pending = Some(now);
            return None;
        }
        self.pending = None;
        self.settled = now;
        Some(&self.settled)
    }
}

/// What one poll found.
#[derive(Debug)]
pub enum Change {
    /// New material, validated: serve it.
    Updated(Box<Material>),
    /// The files changed but are unusable; the material in use stays. Reported once per
    /// distinct content.
    Refused(Error),
}

impl Watcher {
    /// Reads the files: `None` when nothing changed (or a change is not yet stable), else the
    /// validated result.
    pub fn poll(&mut self) -> Option<Change> {
        let now = self.reads.observe(self.source.read())?;
        let result = self
            .source
            .validate(now, SystemTime::now())
            .and_then(|material| {
                let named = material.credentials.identity();
                if named == &self.identity {
                    Ok(material)
                } else {
                    Err(Error::Parse {
                        what: self.source.cert.display().to_string(),
                        reason: format!(
                            "the new certificate names {named}, but this gateway is {}",
                            self.identity
                        ),
                    })
                }
            });
        Some(match result {
            Ok(material) => Change::Updated(Box::new(material)),
            Err(e) => Change::Refused(e),
        })
    }
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "meshgate-source-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).unwrap();
        }
        fn source(&self) -> FileSource {
            FileSource {
                cert: self.0.join("tls.crt"),
                key: self.0.join("tls.key"),
                anchors: AnchorSource::File(self.0.join("ca.crt")),
            }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const ID: &str = "gw.source.mesh";

    fn setup(tag: &str) -> (Dir, TestCa, Watcher) {
        let dir = Dir::new(tag);
        let ca = TestCa::new("source.mesh");
        let leaf = ca.leaf(ID);
        dir.write("tls.crt", &leaf.chain_pem);
        dir.write("tls.key", &leaf.key_pem);
        dir.write("ca.crt", &ca.anchors_pem());
        let (material, watcher) = dir.source().load_and_watch().unwrap();
        assert_eq!(material.credentials.identity().as_str(), ID);
        (dir, ca, watcher)
    }

    #[test]
    fn settle_reports_a_change_once_after_two_identical_reads() {
        let mut reads = Settle::new(1);
        assert_eq!(reads.observe(1), None);
        assert_eq!(reads.observe(2), None, "seen once");
        assert_eq!(reads.observe(3), None, "moved on: wait again");
        assert_eq!(reads.observe(3), Some(&3));
        assert_eq!(reads.observe(3), None, "reported once");
    }

    #[test]
    fn unchanged_files_report_nothing() {
        let (_dir, _ca, mut watcher) = setup("same");
        assert!(watcher.poll().is_none());
        assert!(watcher.poll().is_none());
    }

    #[test]
    fn a_new_leaf_is_reported_once_after_two_identical_reads() {
        let (dir, ca, mut watcher) = setup("new");
        let next = ca.leaf(ID);
        dir.write("tls.crt", &next.chain_pem);
        dir.write("tls.key", &next.key_pem);
        assert!(watcher.poll().is_none(), "first sight of a change waits");
        let Some(Change::Updated(material)) = watcher.poll() else {
            panic!("expected the new leaf")
        };
        assert_eq!(material.credentials.chain(), next.chain.as_slice());
        assert!(watcher.poll().is_none(), "reported once");
    }

    #[test]
    fn half_written_set_is_not_reported_when_completed_in_time() {
        let (dir, ca, mut watcher) = setup("half");
        let next = ca.leaf(ID);
        dir.write("tls.crt", &next.chain_pem);
        assert!(watcher.poll().is_none());
        dir.write("tls.key", &next.key_pem);
        assert!(watcher.poll().is_none(), "the content moved on: wait again");
        assert!(matches!(watcher.poll(), Some(Change::Updated(_))));
    }

    #[test]
    fn mismatched_key_and_corrupt_file_are_refused_once_each() {
        let (dir, ca, mut watcher) = setup("bad");
        dir.write("tls.key", &ca.leaf(ID).key_pem);
        watcher.poll();
        let Some(Change::Refused(e)) = watcher.poll() else {
            panic!("expected a refusal")
        };
        assert!(matches!(e, Error::KeyMismatch), "{e}");
        assert!(
            watcher.poll().is_none(),
            "the same bad content is not reported again"
        );
        dir.write("tls.crt", "-----BEGIN CERTIFICATE-----\ngarbage\n");
        watcher.poll();
        assert!(matches!(watcher.poll(), Some(Change::Refused(_))));
    }

    #[test]
    fn files_loaded_as_of_an_earlier_time_are_watched_and_changes_checked_now() {
        let dir = Dir::new("at");
        let ca = TestCa::new("source.mesh");
        let now = SystemTime::now();
        let expired = ca.leaf_with(
            ID,
            crate::issue::Validity {
                not_before: now - std::time::Duration::from_secs(15),
                not_after: now - std::time::Duration::from_secs(5),
            },
        );
        dir.write("tls.crt", &expired.chain_pem);
        dir.write("tls.key", &expired.key_pem);
        dir.write("ca.crt", &ca.anchors_pem());
        assert!(dir.source().load_and_watch().is_err(), "expired now");
        let then = now - std::time::Duration::from_secs(10);
        let (material, mut watcher) = dir.source().load_and_watch_at(then).unwrap();
        assert!(material.credentials.not_after() < now);
        assert!(watcher.poll().is_none(), "what was loaded is the baseline");
        // A change to another leaf that has expired too: validated as of now, so refused.
        let other = ca.leaf_with(
            ID,
            crate::issue::Validity {
                not_before: now - std::time::Duration::from_secs(15),
                not_after: now - std::time::Duration::from_secs(5),
            },
        );
        dir.write("tls.crt", &other.chain_pem);
        dir.write("tls.key", &other.key_pem);
        watcher.poll();
        assert!(matches!(watcher.poll(), Some(Change::Refused(_))));
    }

    #[test]
    fn another_identity_is_refused() {
        let (dir, ca, mut watcher) = setup("other");
        let other = ca.leaf("intruder.source.mesh");
        dir.write("tls.crt", &other.chain_pem);
        dir.write("tls.key", &other.key_pem);
        watcher.poll();
        let Some(Change::Refused(e)) = watcher.poll() else {
            panic!("expected a refusal")
        };
        assert!(e.to_string().contains("intruder.source.mesh"), "{e}");
    }
}
