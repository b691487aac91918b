//! Who a verified client certificate names.
//!
//! After a mutual-TLS handshake rustls has verified the client's chain
//! against `client_ca`; [`peer_names`] reads the end-entity certificate's
//! names for authorization: its subjectAltName DNS names, in order, then
//! its subject common names that are not already among them. rustls does
//! not expose certificate fields, so x509-parser reads them.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The identity names of the peer's verified certificate (empty without
/// one: a plain connection, no `client_ca`, or the handshake not done).
pub fn peer_names(conn: &rustls::ServerConnection) -> Vec<String> {
    if conn.is_handshaking() {
        return Vec::new();
    }
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .map_or_else(Vec::new, peer_names_of)
}

/// The names of one DER certificate: SAN DNS names, then subject CNs not
/// among them. A certificate that does not parse names nobody.
pub fn peer_names_of(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x509)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    for cn in x509.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            if !names.iter().any(|n| n == cn) {
                names.push(cn.to_string());
            }
        }
    }
    names
}

/// A certificate for a log line: its serial number (hex) and names.
pub fn describe(cert: &CertificateDer<'_>) -> String {
    let serial = X509Certificate::from_der(cert.as_ref())
        .map(|(_, x)| x.raw_serial_as_string().replace(':', ""))
        .unwrap_or_else(|_| "?".into());
    let names = peer_names_of(cert);
    if names.is_empty() {
        format!("serial {serial}")
    } else {
        format!("serial {serial}, names {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: &[&str], cn: Option<&str>) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn sans_in_order_then_a_new_common_name() {
        let c = cert(&["web1.example", "web1"], Some("web1-client"));
        assert_eq!(peer_names_of(&c), ["web1.example", "web1", "web1-client"]);
    }

    #[test]
    fn a_common_name_already_among_the_sans_is_not_repeated() {
        let c = cert(&["web1.example"], Some("web1.example"));
        assert_eq!(peer_names_of(&c), ["web1.example"]);
    }

    #[test]
    fn common_name_only() {
        let c = cert(&[], Some("legacy-host"));
        assert_eq!(peer_names_of(&c), ["legacy-host"]);
    }

    #[test]
    fn ip_sans_are_not_names() {
        let c = cert(&["127.0.0.1", "db1"], None);
        assert_eq!(peer_names_of(&c), ["db1"]);
    }

    #[test]
    fn described_by_serial_and_names() {
        let c = cert(&["logs.example"], None);
        let d = describe(&c);
        assert!(d.starts_with("serial "), "{d}");
        assert!(d.ends_with(", names logs.example"), "{d}");
    }

    #[test]
    fn garbage_names_nobody() {
        let c = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(peer_names_of(&c).is_empty());
    }
}
