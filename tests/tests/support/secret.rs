//! A directory laid out like a mounted Kubernetes secret, for tests of credential reloads.

use std::path::PathBuf;

use identity::issue::Issued;

/// A directory laid out like a mounted Kubernetes secret: `tls.crt`, `tls.key` and `ca.crt` are
/// symlinks into `..data`, itself a symlink to a timestamped directory that is swapped whole.
pub struct SecretDir {
    pub root: PathBuf,
    version: u32,
}

impl SecretDir {
    pub fn new(tag: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("meshgate-lifecycle-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        for name in ["tls.crt", "tls.key", "ca.crt"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).unwrap();
        }
        Self { root, version: 0 }
    }

    /// Publishes a new version atomically, as the kubelet does.
    pub fn publish(&mut self, leaf: &Issued, anchors_pem: &str) {
        self.version += 1;
        let dir = format!("..2026_11_21_v{}", self.version);
        std::fs::create_dir_all(self.root.join(&dir)).unwrap();
        std::fs::write(self.root.join(&dir).join("tls.crt"), &leaf.chain_pem).unwrap();
        std::fs::write(self.root.join(&dir).join("tls.key"), &leaf.key_pem).unwrap();
        std::fs::write(self.root.join(&dir).join("ca.crt"), anchors_pem).unwrap();
        let tmp = self.root.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&dir, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
    }

    /// Overwrites one file of the current version in place (no swap).
    pub fn overwrite(&self, name: &str, text: &str) {
        let target = std::fs::read_link(self.root.join("..data")).unwrap();
        std::fs::write(self.root.join(target).join(name), text).unwrap();
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
