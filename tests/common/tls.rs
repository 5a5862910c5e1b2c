//! TLS and API keys for test servers: a private CA (made with rcgen, once per test binary)
//! that signs the server's certificate (`localhost`, `127.0.0.1`) and a client certificate,
//! and a keys file with one key per scope and one with every scope.

use aelabel::service::auth::ApiKeys;
use aelabel::service::{Security, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// How often test servers re-read their certificate files.
pub const RELOAD_EVERY: Duration = Duration::from_millis(100);

/// The test keys: `(name, scopes, key)`.
pub const KEYS: [(&str, &str, &str); 4] = [
    ("labeller", "label", "label-key-0123456789abcdef"),
    ("reviewer", "jobs", "jobs-key-0123456789abcdef"),
    ("trainer", "train", "train-key-0123456789abcdef"),
    ("admin", "label,jobs,train", "admin-key-0123456789abcdef"),
];

/// The key of `name` in [`KEYS`].
pub fn key(name: &str) -> &'static str {
    KEYS.iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, k)| *k)
        .unwrap_or_else(|| panic!("no test key named {name}"))
}

/// The key with every scope, which harness clients send.
pub fn admin_key() -> &'static str {
    key("admin")
}

/// The keys file's text.
pub fn keys_file_text() -> String {
    let mut text = String::from("# test keys: NAME SCOPES KEY\n");
    for (name, scopes, key) in KEYS {
        text.push_str(&format!("{name} {scopes} {key}\n"));
    }
    text
}

/// [`KEYS`], parsed.
pub fn api_keys() -> ApiKeys {
    ApiKeys::parse(&keys_file_text(), Path::new("test-keys")).expect("the test keys parse")
}

/// A CA and the files it signed, in a temporary folder.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl TestPki {
    /// A new CA, a server certificate for `localhost` and `127.0.0.1`, and a client
    /// certificate, written as PEM files.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "aelabel test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Self {
            dir: tempfile::Builder::new()
                .prefix("aelabel-test-pki-")
                .tempdir()
                .unwrap(),
            ca,
        };
        std::fs::write(pki.ca_cert(), pki.ca.pem()).unwrap();
        pki.issue_server_cert();
        let (cert, key) = pki.sign(&["aelabel-test-client"]);
        std::fs::write(pki.client_cert(), cert).unwrap();
        std::fs::write(pki.client_key(), key).unwrap();
        pki
    }

    /// A certificate for `names` and its key, as PEM.
    fn sign(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a new server certificate and key (a fresh key pair): what cert-manager does on
    /// rotation. Returns the new certificate's DER.
    pub fn issue_server_cert(&self) -> Vec<u8> {
        let (cert, key) = self.sign(&["localhost", "127.0.0.1"]);
        // Written next to the files and renamed over them, as a Secret volume swaps them.
        for (path, pem) in [(self.server_key(), &key), (self.server_cert(), &cert)] {
            let part = path.with_extension("new");
            std::fs::write(&part, pem).unwrap();
            std::fs::rename(&part, &path).unwrap();
        }
        pem_der(&cert)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate clients trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// The server's certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }

    /// The server's key.
    pub fn server_key(&self) -> PathBuf {
        self.path("server-key.pem")
    }

    /// A client certificate the CA signed (for mutual TLS).
    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }

    /// Its key.
    pub fn client_key(&self) -> PathBuf {
        self.path("client-key.pem")
    }

    /// Server TLS settings on these files.
    pub fn tls_config(&self) -> TlsConfig {
        TlsConfig {
            cert: self.server_cert(),
            key: self.server_key(),
            client_ca: None,
            reload_every: RELOAD_EVERY,
        }
    }
}

/// The DER bytes of the first certificate in `pem`.
pub fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

/// The PKI of this test binary, made on first use.
pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(TestPki::new)
}

/// How a test server's doors are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doors {
    /// Plaintext, no keys: the server without `--tls-*` or `--api-keys-file`.
    Plain,
    /// TLS with [`pki`]'s certificate and [`KEYS`] asked for; harness clients send the admin key.
    TlsWithKeys,
}

impl Doors {
    /// The server settings for these doors.
    pub fn security(self) -> Security {
        match self {
            Doors::Plain => Security::default(),
            Doors::TlsWithKeys => Security {
                tls: Some(pki().tls_config()),
                api_keys: Some(api_keys()),
                ..Security::default()
            },
        }
    }

    /// `config` with these doors.
    pub fn apply(self, config: aelabel::service::ServeConfig) -> aelabel::service::ServeConfig {
        aelabel::service::ServeConfig {
            security: self.security(),
            ..config
        }
    }
}
