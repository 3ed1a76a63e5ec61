//! `meshgate certs`: create a trust anchor, issuers and leaves, merge bundles and inspect
//! certificates — what Linkerd users do with `step certificate` today. The files are plain PEM
//! that `openssl verify` and `linkerd install --identity-trust-anchors-file …` accept; keys are
//! PKCS#8 and written with mode 0600.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use identity::inspect::{self, Report};
use identity::issue::{Ca, LeafSpec, Validity};
use identity::{IdentityName, TrustAnchors};

use crate::config::EXIT_BAD_CONFIG;

/// The `certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A self-signed root CA (the trust anchor), ECDSA P-256.
    Root {
        /// Subject common name.
        #[arg(long, default_value = "root.linkerd.cluster.local")]
        name: String,
        /// Lifetime.
        #[arg(long, default_value = "87600h", value_parser = humantime::parse_duration)]
        not_after: Duration,
        /// Output files.
        #[command(flatten)]
        out: Output,
    },
    /// An issuer (intermediate CA) signed by a root, ECDSA P-256.
    Issuer {
        /// Subject common name.
        #[arg(long, default_value = "identity.linkerd.cluster.local")]
        name: String,
        /// Lifetime.
        #[arg(long, default_value = "8760h", value_parser = humantime::parse_duration)]
        not_after: Duration,
        /// The signing CA.
        #[command(flatten)]
        signer: Signer,
        /// Output files.
        #[command(flatten)]
        out: Output,
    },
    /// A leaf for an identity (EKU serverAuth + clientAuth, DNS SAN = identity), written with
    /// the issuer chain after it, as `tls.crt` in a kubernetes.io/tls secret.
    Leaf {
        /// The identity, e.g.
        /// linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local.
        #[arg(long)]
        identity: String,
        /// An extra URI SAN, e.g. spiffe://cluster.local/ns/linkerd-multicluster/sa/linkerd-gateway.
        #[arg(long)]
        spiffe: Option<String>,
        /// Lifetime.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The signing CA.
        #[command(flatten)]
        signer: Signer,
        /// Output files.
        #[command(flatten)]
        out: Output,
    },
    /// Concatenate trust-anchor files into one bundle on stdout, without duplicates (the
    /// rotation step "old root + new root").
    Bundle {
        /// PEM files, in order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Describe certificates: subject, SANs, identity, issuer, validity and days left; with
    /// `--bundle`, whether each file chains to it and, if not, why.
    Inspect {
        /// PEM files (a leaf file may carry its intermediates after it).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A trust-anchor bundle to check the files against.
        #[arg(long)]
        bundle: Option<PathBuf>,
    },
}

/// The signing CA.
#[derive(Debug, clap::Args)]
pub struct Signer {
    /// The signing CA's certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// The signing CA's private key (PEM).
    #[arg(long)]
    ca_key: PathBuf,
}

/// Where to write.
#[derive(Debug, clap::Args)]
pub struct Output {
    /// Certificate output file [default: ca.crt, issuer.crt or tls.crt].
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Private key output file, mode 0600 [default: ca.key, issuer.key or tls.key].
    #[arg(long)]
    key: Option<PathBuf>,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

/// Why a `certs` command failed, and with which exit status.
struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            status: u8::try_from(EXIT_BAD_CONFIG).unwrap_or(64),
            message: message.into(),
        }
    }
    fn failed(message: impl Into<String>) -> Self {
        Self {
            status: 1,
            message: message.into(),
        }
    }
}

/// Runs one `certs` command.
pub fn run(command: Command) -> ExitCode {
    match execute(command) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("meshgate certs: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

fn execute(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Root {
            name,
            not_after,
            out,
        } => {
            let ca = Ca::root(&name, Validity::from_now(not_after))
                .map_err(|e| Failure::failed(e.to_string()))?;
            write_pair(&out, ("ca.crt", "ca.key"), &ca.cert_pem(), &ca.key_pem())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Issuer {
            name,
            not_after,
            signer,
            out,
        } => {
            let parent = load_ca(&signer)?;
            let ca = parent
                .issuer(&name, Validity::from_now(not_after))
                .map_err(|e| Failure::failed(e.to_string()))?;
            write_pair(
                &out,
                ("issuer.crt", "issuer.key"),
                &ca.chain_pem(),
                &ca.key_pem(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Leaf {
            identity,
            spiffe,
            ttl,
            signer,
            out,
        } => {
            let name: IdentityName = identity
                .parse()
                .map_err(|e| Failure::usage(format!("--identity {identity:?}: {e}")))?;
            if name.is_uri() {
                return Err(Failure::usage(
                    "--identity must be a DNS name; give a SPIFFE URI with --spiffe",
                ));
            }
            if let Some(uri) = &spiffe {
                let parsed: IdentityName = uri
                    .parse()
                    .map_err(|e| Failure::usage(format!("--spiffe {uri:?}: {e}")))?;
                if !parsed.is_uri() {
                    return Err(Failure::usage(format!("--spiffe {uri:?} is not a URI")));
                }
            }
            let ca = load_ca(&signer)?;
            let issued = ca
                .leaf(&LeafSpec {
                    identity: name.as_str(),
                    spiffe: spiffe.as_deref(),
                    validity: Validity::from_now(ttl),
                })
                .map_err(|e| Failure::failed(e.to_string()))?;
            write_pair(
                &out,
                ("tls.crt", "tls.key"),
                &issued.chain_pem,
                &issued.key_pem,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle { files } => {
            let (pem, notes) = bundle(&files)?;
            for note in notes {
                eprintln!("meshgate certs bundle: {note}");
            }
            print!("{pem}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { files, bundle } => inspect_files(&files, bundle.as_deref()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::usage(format!("read {}: {e}", path.display())))
}

fn load_ca(signer: &Signer) -> Result<Ca, Failure> {
    let text = |path: &Path| {
        String::from_utf8(read(path)?)
            .map_err(|_| Failure::usage(format!("{} is not PEM text", path.display())))
    };
    Ca::from_pem(
        &signer.ca.display().to_string(),
        &text(&signer.ca)?,
        &text(&signer.ca_key)?,
    )
    .map_err(|e| Failure::usage(format!("signing CA {}: {e}", signer.ca.display())))
}

fn write_pair(
    out: &Output,
    (cert_default, key_default): (&str, &str),
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), Failure> {
    let cert = out.cert.clone().unwrap_or_else(|| cert_default.into());
    let key = out.key.clone().unwrap_or_else(|| key_default.into());
    if !out.force {
        for path in [&cert, &key] {
            if path.exists() {
                return Err(Failure::usage(format!(
                    "{} exists; pass --force to overwrite it",
                    path.display()
                )));
            }
        }
    }
    write_file(&key, key_pem, 0o600)?;
    write_file(&cert, cert_pem, 0o644)?;
    eprintln!(
        "wrote {}, and {} with mode 0600",
        cert.display(),
        key.display()
    );
    Ok(())
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), Failure> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let fail = |e: std::io::Error| Failure::failed(format!("write {}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    // `mode` applies only to new files: an overwritten key file gets 0600 too.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)
}

/// The certificates of `files`, deduplicated, as one PEM bundle, with notes on what was dropped
/// or looks wrong.
fn bundle(files: &[PathBuf]) -> Result<(String, Vec<String>), Failure> {
    let mut seen = Vec::new();
    let mut pem = String::new();
    let mut notes = Vec::new();
    for path in files {
        let what = path.display().to_string();
        let certs =
            inspect::read_pem(&what, &read(path)?).map_err(|e| Failure::usage(e.to_string()))?;
        for der in certs {
            let report = Report::of(&what, &der).map_err(|e| Failure::usage(e.to_string()))?;
            if seen.contains(&der) {
                notes.push(format!(
                    "{what}: {} is already in the bundle",
                    report.subject
                ));
                continue;
            }
            if !(report.is_ca && report.self_signed) {
                notes.push(format!(
                    "{what}: {} is not a self-signed root (it is a {}); trust anchors should be roots",
                    report.subject,
                    report.kind()
                ));
            }
            if report.not_after < identity::source::unix_seconds(SystemTime::now()) {
                notes.push(format!("{what}: {} has expired", report.subject));
            }
            pem.push_str(&identity::issue::pem("CERTIFICATE", &der));
            seen.push(der);
        }
    }
    Ok((pem, notes))
}

fn inspect_files(files: &[PathBuf], bundle: Option<&Path>) -> Result<ExitCode, Failure> {
    let anchors = match bundle {
        Some(path) => Some(
            TrustAnchors::from_pem(&path.display().to_string(), &read(path)?)
                .map_err(|e| Failure::usage(e.to_string()))?,
        ),
        None => None,
    };
    let now = SystemTime::now();
    let mut all_good = true;
    for path in files {
        let what = path.display().to_string();
        let certs =
            inspect::read_pem(&what, &read(path)?).map_err(|e| Failure::usage(e.to_string()))?;
        for (i, der) in certs.iter().enumerate() {
            let report = Report::of(&what, der).map_err(|e| Failure::usage(e.to_string()))?;
            println!("{what} [{}/{}]", i + 1, certs.len());
            print!("{}", report.render(now));
            all_good &= report.not_after >= identity::source::unix_seconds(now);
        }
        if let (Some(anchors), Some(bundle)) = (&anchors, bundle) {
            match inspect::chains_to(&certs, anchors, now) {
                Ok(()) => println!("  chains to {}: yes", bundle.display()),
                Err(why) => {
                    all_good = false;
                    println!("  chains to {}: NO — {why}", bundle.display());
                }
            }
        }
    }
    Ok(if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
