//! The pipeline's own certificate authority and the server certificates it issues, with
//! their renewal schedule: when a CA is staged, when it takes over, when a certificate is
//! re-issued. Decisions read only the stored PEM and the clock given to them; keys and
//! certificates come from a `CredentialGenerator`. Pure (no I/O, no clock of its own).
//!
//! Renewal never breaks trust between the nodes of a running cluster. A new CA is generated
//! `CA_STAGE_BEFORE` before the current one expires and only added to the trust bundle (the
//! pods roll once and trust both); `CA_SWITCH_BEFORE` expiry it becomes current and the
//! certificates are re-issued by it (the pods roll again; every node already trusts both
//! CAs), and the old CA stays in the bundle until it expires. A certificate is re-issued
//! `CERT_RENEW_BEFORE` its own expiry, or at once when it is unreadable, was not issued by
//! the current CA, or names other hosts.

use std::collections::BTreeSet;

use x509_parser::{extensions::GeneralName, pem::parse_x509_pem};

use super::credentials::{CredentialGenerator, TlsBundle};
use crate::error::Result;

const DAY: i64 = 86_400;
/// Lifetime of a pipeline CA.
pub const CA_VALIDITY: i64 = 730 * DAY;
/// How long before the CA expires its successor is generated and trusted.
pub const CA_STAGE_BEFORE: i64 = 60 * DAY;
/// How long before the CA expires its successor takes over and re-issues the certificates.
pub const CA_SWITCH_BEFORE: i64 = 30 * DAY;
/// Lifetime of a server certificate (never beyond its CA's).
pub const CERT_VALIDITY: i64 = 365 * DAY;
/// How long before a server certificate expires it is re-issued.
pub const CERT_RENEW_BEFORE: i64 = 30 * DAY;
/// Certificates are valid from a little before they are made, for clocks slightly behind.
const BACKDATE: i64 = 3_600;

/// A PEM CA certificate and its PEM private key.
#[derive(Clone, PartialEq, Eq)]
pub struct CaKeyPair {
    pub crt: String,
    pub key: String,
}

impl std::fmt::Debug for CaKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKeyPair")
            .field("crt_bytes", &self.crt.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The CA state kept in the pipeline's CA Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineCa {
    /// Issues every certificate.
    pub current: CaKeyPair,
    /// Already trusted, not yet issuing (present during the staging window).
    pub next: Option<CaKeyPair>,
    /// The CA `current` replaced, trusted until it expires.
    pub previous: Option<String>,
}

impl PipelineCa {
    /// Every CA certificate a client or a node must trust now, current first.
    pub fn trust_bundle(&self) -> String {
        let next = self.next.iter().map(|n| n.crt.as_str());
        join_pem(
            std::iter::once(self.current.crt.as_str())
                .chain(next)
                .chain(self.previous.as_deref()),
        )
    }
}

/// PEM blocks one after the other, each starting on a line of its own.
pub fn join_pem<'a>(blocks: impl IntoIterator<Item = &'a str>) -> String {
    let mut joined = String::new();
    for block in blocks {
        if !joined.is_empty() && !joined.ends_with('\n') {
            joined.push('\n');
        }
        joined.push_str(block);
    }
    joined
}

/// Start and end of a certificate's validity, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// What the renewal decisions read from a PEM certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    pub subject: String,
    pub issuer: String,
    pub not_after: i64,
    /// DNS names of the subject alternative name extension, sorted.
    pub dns_names: BTreeSet<String>,
}

/// The facts of the first certificate of a PEM text; `None` if it is not one.
pub fn facts(pem: &str) -> Option<CertificateFacts> {
    let (_, pem) = parse_x509_pem(pem.as_bytes()).ok()?;
    let certificate = pem.parse_x509().ok()?;
    let dns_names = match certificate.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect(),
        _ => BTreeSet::new(),
    };
    Some(CertificateFacts {
        subject: certificate.subject().to_string(),
        issuer: certificate.issuer().to_string(),
        not_after: certificate.validity().not_after.timestamp(),
        dns_names,
    })
}

/// Common name of a pipeline's CA: the pipeline and the CA's start, so successive CAs
/// have distinct names and a certificate's issuer tells which one signed it.
pub fn ca_common_name(pipeline: &str, not_before: i64) -> String {
    let start = chrono::DateTime::from_timestamp(not_before, 0)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|| not_before.to_string());
    format!("{pipeline} pipeline CA {start}")
}

fn new_ca(pipeline: &str, now: i64, generator: &dyn CredentialGenerator) -> Result<CaKeyPair> {
    let validity = Validity {
        not_before: now - BACKDATE,
        not_after: now + CA_VALIDITY,
    };
    generator.certificate_authority(&ca_common_name(pipeline, validity.not_before), validity)
}

/// Seconds until a CA certificate expires; `None` if it cannot be read.
fn remaining(crt: &str, now: i64) -> Option<i64> {
    facts(crt).map(|f| f.not_after - now)
}

/// The CA state for `now`: the stored one advanced along the renewal schedule, or a new
/// CA when there is none or the stored one is unreadable or expired.
pub fn maintain_ca(
    stored: Option<PipelineCa>,
    pipeline: &str,
    now: i64,
    generator: &dyn CredentialGenerator,
) -> Result<PipelineCa> {
    let usable = stored.filter(|ca| remaining(&ca.current.crt, now).is_some_and(|r| r > 0));
    let Some(mut ca) = usable else {
        return Ok(PipelineCa {
            current: new_ca(pipeline, now, generator)?,
            next: None,
            previous: None,
        });
    };
    if ca
        .previous
        .as_deref()
        .is_some_and(|crt| remaining(crt, now).is_none_or(|r| r <= 0))
    {
        ca.previous = None;
    }
    if ca
        .next
        .as_ref()
        .is_some_and(|next| remaining(&next.crt, now).is_none_or(|r| r <= 0))
    {
        ca.next = None;
    }
    let left = remaining(&ca.current.crt, now).unwrap_or(0);
    if left <= CA_STAGE_BEFORE && ca.next.is_none() {
        ca.next = Some(new_ca(pipeline, now, generator)?);
    }
    if left <= CA_SWITCH_BEFORE {
        if let Some(next) = ca.next.take() {
            let retired = std::mem::replace(&mut ca.current, next);
            ca.previous = Some(retired.crt);
        }
    }
    Ok(ca)
}

/// Whether the first certificate of `leaf` carries a valid signature of the key of the
/// first certificate of `ca` (a CA made again under the same name has another key).
pub fn signed_by(leaf: &str, ca: &str) -> bool {
    let parse = |pem: &str| parse_x509_pem(pem.as_bytes()).ok().map(|(_, pem)| pem);
    let (Some(leaf), Some(ca)) = (parse(leaf), parse(ca)) else {
        return false;
    };
    let (Ok(leaf), Ok(ca)) = (leaf.parse_x509(), ca.parse_x509()) else {
        return false;
    };
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// The server certificate a service presents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRequest {
    pub common_name: String,
    pub dns_names: Vec<String>,
}

/// The stored bundle with the current trust bundle, or a new certificate from the current
/// CA when the stored one is missing, unreadable, near its end, from another CA or for
/// other names.
pub fn maintain_certificate(
    stored: Option<TlsBundle>,
    ca: &PipelineCa,
    request: &CertificateRequest,
    now: i64,
    generator: &dyn CredentialGenerator,
) -> Result<TlsBundle> {
    let ca_facts = facts(&ca.current.crt);
    let wanted: BTreeSet<String> = request.dns_names.iter().cloned().collect();
    let keep = stored.filter(|bundle| {
        let (Some(leaf), Some(ca_facts)) = (facts(&bundle.tls_crt), ca_facts.as_ref()) else {
            return false;
        };
        leaf.issuer == ca_facts.subject
            && signed_by(&bundle.tls_crt, &ca.current.crt)
            && leaf.not_after - now > CERT_RENEW_BEFORE
            && leaf.dns_names == wanted
    });
    let trust = ca.trust_bundle();
    if let Some(bundle) = keep {
        return Ok(TlsBundle {
            ca_crt: trust,
            ..bundle
        });
    }
    let ca_end = ca_facts.map_or(now + CERT_VALIDITY, |f| f.not_after);
    let validity = Validity {
        not_before: now - BACKDATE,
        not_after: (now + CERT_VALIDITY).min(ca_end),
    };
    let (tls_crt, tls_key) = generator.server_certificate(
        &ca.current,
        &request.common_name,
        &request.dns_names,
        validity,
    )?;
    Ok(TlsBundle {
        ca_crt: trust,
        tls_crt,
        tls_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::credentials::RandomCredentials;

    const NOW: i64 = 1_800_000_000;

    fn request() -> CertificateRequest {
        CertificateRequest {
            common_name: "shop-kafka".into(),
            dns_names: vec![
                "*.shop-kafka-headless.shops.svc".into(),
                "shop-kafka.shops.svc".into(),
            ],
        }
    }

    fn fresh_ca(at: i64) -> PipelineCa {
        maintain_ca(None, "shop", at, &RandomCredentials).expect("ca")
    }

    #[test]
    fn a_new_ca_is_valid_for_its_lifetime_and_named_after_its_start() {
        let ca = fresh_ca(NOW);
        let f = facts(&ca.current.crt).expect("readable");
        assert_eq!(f.not_after, NOW + CA_VALIDITY);
        assert_eq!(f.subject, "CN=shop pipeline CA 20270115T070000Z");
        assert_eq!(f.issuer, f.subject);
        assert!(ca.current.key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(ca.next, None);
        assert_eq!(ca.previous, None);
        assert_eq!(ca.trust_bundle(), ca.current.crt);
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn the_ca_is_kept_then_staged_then_switched_then_its_predecessor_dropped() {
        let first = fresh_ca(NOW);
        let end = NOW + CA_VALIDITY;

        let kept = maintain_ca(
            Some(first.clone()),
            "shop",
            end - CA_STAGE_BEFORE - 1,
            &RandomCredentials,
        )
        .expect("ca");
        assert_eq!(kept, first);

        let staged_at = end - CA_STAGE_BEFORE;
        let staged =
            maintain_ca(Some(first.clone()), "shop", staged_at, &RandomCredentials).expect("ca");
        assert_eq!(staged.current, first.current);
        let next = staged.next.clone().expect("staged");
        assert_eq!(
            facts(&next.crt).expect("readable").not_after,
            staged_at + CA_VALIDITY
        );
        assert_eq!(
            staged.trust_bundle(),
            format!("{}{}", first.current.crt, next.crt)
        );
        // Staging happens once.
        assert_eq!(
            maintain_ca(
                Some(staged.clone()),
                "shop",
                staged_at + DAY,
                &RandomCredentials
            )
            .expect("ca"),
            staged
        );

        let switched = maintain_ca(
            Some(staged.clone()),
            "shop",
            end - CA_SWITCH_BEFORE,
            &RandomCredentials,
        )
        .expect("ca");
        assert_eq!(switched.current, next);
        assert_eq!(switched.next, None);
        assert_eq!(
            switched.previous.as_deref(),
            Some(first.current.crt.as_str())
        );
        assert_eq!(
            switched.trust_bundle(),
            format!("{}{}", next.crt, first.current.crt)
        );

        let retired = maintain_ca(Some(switched), "shop", end, &RandomCredentials).expect("ca");
        assert_eq!(retired.current, next);
        assert_eq!(retired.previous, None);
    }

    #[test]
    fn an_operator_away_past_both_windows_stages_and_switches_at_once() {
        let first = fresh_ca(NOW);
        let late = NOW + CA_VALIDITY - DAY;
        let ca = maintain_ca(Some(first.clone()), "shop", late, &RandomCredentials).expect("ca");
        assert_ne!(ca.current, first.current);
        assert_eq!(ca.previous.as_deref(), Some(first.current.crt.as_str()));
    }

    #[test]
    fn an_expired_or_unreadable_ca_is_replaced_without_trusting_it() {
        let first = fresh_ca(NOW);
        let after = maintain_ca(
            Some(first.clone()),
            "shop",
            NOW + CA_VALIDITY,
            &RandomCredentials,
        )
        .expect("ca");
        assert_ne!(after.current, first.current);
        assert_eq!(after.previous, None);
        let garbage = PipelineCa {
            current: CaKeyPair {
                crt: "not a certificate".into(),
                key: "k".into(),
            },
            next: None,
            previous: None,
        };
        let replaced = maintain_ca(Some(garbage), "shop", NOW, &RandomCredentials).expect("ca");
        assert!(facts(&replaced.current.crt).is_some());
    }

    #[test]
    fn a_certificate_is_issued_by_the_current_ca_for_the_requested_names() {
        let ca = fresh_ca(NOW);
        let bundle =
            maintain_certificate(None, &ca, &request(), NOW, &RandomCredentials).expect("cert");
        let leaf = facts(&bundle.tls_crt).expect("readable");
        assert_eq!(leaf.subject, "CN=shop-kafka");
        assert_eq!(leaf.issuer, facts(&ca.current.crt).expect("ca").subject);
        assert_eq!(leaf.not_after, NOW + CERT_VALIDITY);
        assert_eq!(
            leaf.dns_names,
            BTreeSet::from([
                "*.shop-kafka-headless.shops.svc".to_string(),
                "shop-kafka.shops.svc".to_string()
            ])
        );
        assert_eq!(bundle.ca_crt, ca.trust_bundle());
        assert!(bundle.tls_key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(signed_by(&bundle.tls_crt, &ca.current.crt));
    }

    #[test]
    fn a_certificate_is_kept_until_its_renewal_time_then_reissued() {
        let ca = fresh_ca(NOW);
        let first =
            maintain_certificate(None, &ca, &request(), NOW, &RandomCredentials).expect("cert");
        let renew_at = NOW + CERT_VALIDITY - CERT_RENEW_BEFORE;
        let kept = maintain_certificate(
            Some(first.clone()),
            &ca,
            &request(),
            renew_at - 1,
            &RandomCredentials,
        )
        .expect("cert");
        assert_eq!(kept, first);
        let renewed = maintain_certificate(
            Some(first.clone()),
            &ca,
            &request(),
            renew_at,
            &RandomCredentials,
        )
        .expect("cert");
        assert_ne!(renewed.tls_crt, first.tls_crt);
        assert_ne!(renewed.tls_key, first.tls_key);
        assert_eq!(
            facts(&renewed.tls_crt).expect("leaf").not_after,
            renew_at + CERT_VALIDITY
        );
    }

    #[test]
    fn a_certificate_never_outlives_its_ca_and_moves_to_the_next_one_at_the_switch() {
        let ca = fresh_ca(NOW);
        let late = NOW + CA_VALIDITY - CA_STAGE_BEFORE;
        let staged = maintain_ca(Some(ca.clone()), "shop", late, &RandomCredentials).expect("ca");
        let leaf =
            maintain_certificate(None, &staged, &request(), late, &RandomCredentials).expect("c");
        assert_eq!(
            facts(&leaf.tls_crt).expect("leaf").not_after,
            NOW + CA_VALIDITY
        );
        assert!(signed_by(&leaf.tls_crt, &ca.current.crt));
        // Staging changes only the trust bundle.
        assert_eq!(leaf.ca_crt, staged.trust_bundle());

        let switch = NOW + CA_VALIDITY - CA_SWITCH_BEFORE;
        let switched =
            maintain_ca(Some(staged.clone()), "shop", switch, &RandomCredentials).expect("ca");
        let moved = maintain_certificate(
            Some(leaf.clone()),
            &switched,
            &request(),
            switch,
            &RandomCredentials,
        )
        .expect("cert");
        assert_ne!(moved.tls_crt, leaf.tls_crt);
        assert!(signed_by(&moved.tls_crt, &switched.current.crt));
        assert_eq!(moved.ca_crt, switched.trust_bundle());
    }

    #[test]
    fn a_certificate_of_a_same_named_ca_with_another_key_is_reissued() {
        let ca = fresh_ca(NOW);
        let first =
            maintain_certificate(None, &ca, &request(), NOW, &RandomCredentials).expect("cert");
        // The CA Secret deleted and made again within the same second: same subject.
        let again = fresh_ca(NOW);
        assert_eq!(
            facts(&again.current.crt).map(|f| f.subject),
            facts(&ca.current.crt).map(|f| f.subject)
        );
        assert!(!signed_by(&first.tls_crt, &again.current.crt));
        let reissued = maintain_certificate(
            Some(first.clone()),
            &again,
            &request(),
            NOW,
            &RandomCredentials,
        )
        .expect("cert");
        assert_ne!(reissued.tls_crt, first.tls_crt);
        assert!(signed_by(&reissued.tls_crt, &again.current.crt));
    }

    #[test]
    fn other_names_or_an_unreadable_certificate_are_reissued() {
        let ca = fresh_ca(NOW);
        let first =
            maintain_certificate(None, &ca, &request(), NOW, &RandomCredentials).expect("cert");
        let mut wider = request();
        wider.dns_names.push("localhost".into());
        let reissued =
            maintain_certificate(Some(first.clone()), &ca, &wider, NOW, &RandomCredentials)
                .expect("cert");
        assert!(facts(&reissued.tls_crt)
            .expect("leaf")
            .dns_names
            .contains("localhost"));
        let broken = TlsBundle {
            tls_crt: "garbage".into(),
            ..first
        };
        let fixed = maintain_certificate(Some(broken), &ca, &request(), NOW, &RandomCredentials)
            .expect("cert");
        assert!(facts(&fixed.tls_crt).is_some());
    }
}
