//! A private CA and a server certificate it signed, made fresh for each
//! test (rcgen): what an operator who runs LAPI behind TLS without a
//! public certificate has. Nothing is shared between tests or kept.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The three PEM files, written into a directory of the caller's.
pub struct Pki {
    /// The CA's certificate: what a client trusts (`ca_file`).
    pub ca: PathBuf,
    /// The server's certificate, for `ips`, signed by the CA.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A CA and a server certificate for `ips`, written to `dir` as
    /// `ca.pem`, `server.pem` and `server.key`.
    pub fn for_ips(dir: &Path, ips: &[IpAddr]) -> Result<Pki> {
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "sipshield test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca.self_signed(&ca_key).context("signing the CA")?;

        let key = KeyPair::generate().context("server key")?;
        let mut server = CertificateParams::new(Vec::<String>::new()).context("server params")?;
        server.distinguished_name.push(DnType::CommonName, "lapi");
        server.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server.signed_by(&key, &ca, &ca_key).context("signing the server's")?;

        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        for (path, pem) in [
            (&pki.ca, ca.pem()),
            (&pki.cert, server.pem()),
            (&pki.key, key.serialize_pem()),
        ] {
            std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(pki)
    }
}
