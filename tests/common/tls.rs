//! A throw-away PKI for TLS tests, generated with rcgen 0.13.
//!
//! - CA: self-signed, `basicConstraints CA:TRUE` (rustls/webpki refuses a CA
//!   without it), key usages keyCertSign + cRLSign.
//! - Server: signed by the CA, SAN `DNS:localhost` and `IP:127.0.0.1`,
//!   EKU serverAuth (connect as `mqtts://localhost:PORT` or to 127.0.0.1).
//! - Client: signed by the same CA, EKU clientAuth, CN `campusgw-test-client`.
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), which
//! both mosquitto (OpenSSL) and rumqttc (rustls-pemfile) read.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM texts of a CA and of a server and a client certificate it signed.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

/// Where [`TestPki::write_to`] put the PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// A fresh CA with a server cert for localhost/127.0.0.1 and a client
    /// cert. Every call makes an unrelated CA (use a second one as the
    /// "wrong CA" in negative tests).
    pub fn generate() -> TestPki {
        let ca_key = KeyPair::generate().expect("rcgen: generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("rcgen: CA params");
        // A unique CA name: a second TestPki is then an *unknown* issuer to
        // clients of the first (same name would give "BadSignature" instead).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        ca_params.distinguished_name =
            name(&format!("campusgw test CA {}-{nanos}", std::process::id()));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("rcgen: self-sign CA");

        let server_key = KeyPair::generate().expect("rcgen: generate server key");
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("rcgen: server params (SAN localhost, 127.0.0.1)");
        server_params.distinguished_name = name("localhost");
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.use_authority_key_identifier_extension = true;
        let server_cert = server_params
            .signed_by(&server_key, &ca_cert, &ca_key)
            .expect("rcgen: sign server cert with the CA");

        let client_key = KeyPair::generate().expect("rcgen: generate client key");
        let mut client_params =
            CertificateParams::new(Vec::<String>::new()).expect("rcgen: client params");
        client_params.distinguished_name = name("campusgw-test-client");
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client_params.use_authority_key_identifier_extension = true;
        let client_cert = client_params
            .signed_by(&client_key, &ca_cert, &ca_key)
            .expect("rcgen: sign client cert with the CA");

        TestPki {
            ca_cert_pem: ca_cert.pem(),
            ca_key_pem: ca_key.serialize_pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem`,
    /// `client.key` into `dir`.
    pub fn write_to(&self, dir: &Path) -> TlsFiles {
        let files = TlsFiles {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        for (path, pem) in [
            (&files.ca_cert, &self.ca_cert_pem),
            (&files.server_cert, &self.server_cert_pem),
            (&files.server_key, &self.server_key_pem),
            (&files.client_cert, &self.client_cert_pem),
            (&files.client_key, &self.client_key_pem),
        ] {
            std::fs::write(path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        files
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "campus-gateway tests");
    dn
}
