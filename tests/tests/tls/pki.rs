//! Certificates for TLS to memcached, made with rcgen: a CA, a server certificate for
//! localhost and 127.0.0.1 signed by it, a client certificate signed by it, and an
//! unrelated CA. Shared by the TLS tests and the `tls_batches` example.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// The PEM files, in one directory.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes every file under `dir` (created).
    pub fn make(dir: PathBuf) -> Pki {
        std::fs::create_dir_all(&dir).unwrap();
        let ca = write_ca(&dir, "ca");
        write_ca(&dir, "other-ca");
        write_leaf(&dir, "server", &["localhost", "127.0.0.1"], &ca);
        write_leaf(&dir, "client", &["newcache-client"], &ca);
        Pki { dir }
    }

    /// The file `name` (`ca.pem`, `server.pem`, `server-key.pem`, `client.pem`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn write_ca(dir: &Path, name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("newcache test {name}"));
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    (cert, key)
}

fn write_leaf(dir: &Path, name: &str, names: &[&str], ca: &(rcgen::Certificate, KeyPair)) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
}
