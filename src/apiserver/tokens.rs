//! Service-account tokens: bound JWTs (ES256) signed with the server's service-account
//! key, as the TokenRequest API issues them, and their verification for bearer
//! authentication and TokenReview.

use super::auth::UserInfo;
use crate::api::meta::{new_uid, now_secs};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

/// Tokens shorter than this are refused, as upstream does.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// Default lifetime of a requested token.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// Signs and verifies service-account tokens.
pub struct TokenAuthority {
    key: EcdsaKeyPair,
    key_id: String,
    rng: SystemRandom,
    /// `iss` of every token, and the default audience.
    pub issuer: String,
    /// `--service-account-max-token-expiration`: longer requests are cut to this.
    pub max_expiration: Option<i64>,
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    pub audiences: Vec<String>,
    pub expires: i64,
    /// The pod the token is bound to (`kubernetes.io/pod`): name and uid. The token
    /// stops working when that pod is gone.
    pub pod: Option<(String, String)>,
}

impl TokenClaims {
    pub fn user(&self) -> UserInfo {
        UserInfo {
            name: format!(
                "system:serviceaccount:{}:{}",
                self.namespace, self.service_account
            ),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", self.namespace),
                "system:authenticated".into(),
            ],
            ..Default::default()
        }
    }
}

/// Why a key cannot sign, or a token is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the service-account key is not a PKCS#8 key")]
    NotPkcs8,
    #[error("the service-account key is unreadable: {0}")]
    UnreadableKey(String),
    #[error("the service-account key is not a P-256 key: {0}")]
    NotP256(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("not a JWT")]
    NotJwt,
    #[error("bad signature encoding")]
    SignatureEncoding,
    #[error("invalid signature")]
    Signature,
    #[error("bad claims")]
    Claims,
    #[error("token issued by another issuer")]
    Issuer,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audiences are invalid")]
    Audience,
    #[error("pod {namespace}/{pod} that the token is bound to has been deleted or replaced")]
    BoundPodGone { namespace: String, pod: String },
    #[error("service account {namespace}/{name} has been deleted or replaced")]
    AccountGone { namespace: String, name: String },
    #[error("cannot check the token's objects: {0}")]
    Lookup(String),
}

impl TokenAuthority {
    /// From the service-account signing key (PKCS#8 PEM, P-256).
    pub fn new(key_pem: &str, cluster_domain: &str) -> Result<TokenAuthority, TokenError> {
        let der = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
            Ok(PrivateKeyDer::Pkcs8(k)) => k,
            Ok(_) => return Err(TokenError::NotPkcs8),
            Err(e) => return Err(TokenError::UnreadableKey(e.to_string())),
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| TokenError::NotP256(e.to_string()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        Ok(TokenAuthority {
            key_id: B64.encode(digest.as_ref()),
            key,
            rng,
            issuer: format!("https://kubernetes.default.svc.{cluster_domain}"),
            max_expiration: None,
        })
    }

    /// Issues a token for a service account.
    pub fn issue(&self, claims: &TokenClaims) -> Result<String, TokenError> {
        let now = now_secs();
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let mut body = json!({
            "aud": claims.audiences,
            "exp": claims.expires,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "jti": new_uid(),
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
            "kubernetes.io": {
                "namespace": claims.namespace,
                "serviceaccount": {"name": claims.service_account, "uid": claims.service_account_uid},
            },
        });
        if let Some((name, uid)) = &claims.pod {
            body["kubernetes.io"]["pod"] = json!({"name": name, "uid": uid});
        }
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(body.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// Checks signature, issuer, time and audience (any of `audiences`, default the
    /// issuer). Whether the service account still exists is the caller's check.
    pub fn verify(&self, token: &str, audiences: &[String]) -> Result<TokenClaims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotJwt);
        };
        let sig = B64.decode(s).map_err(|_| TokenError::SignatureEncoding)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(format!("{h}.{b}").as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Value = serde_json::from_slice(&B64.decode(b).map_err(|_| TokenError::Claims)?)
            .map_err(|_| TokenError::Claims)?;
        if claims["iss"] != json!(self.issuer) {
            return Err(TokenError::Issuer);
        }
        let now = now_secs();
        let exp = claims["exp"].as_i64().unwrap_or(0);
        if exp < now {
            return Err(TokenError::Expired);
        }
        if claims["nbf"].as_i64().unwrap_or(0) > now + 60 {
            return Err(TokenError::NotYetValid);
        }
        let token_aud: Vec<String> = claims["aud"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let accepted: Vec<String> = if audiences.is_empty() {
            vec![self.issuer.clone()]
        } else {
            audiences.to_vec()
        };
        if !token_aud.iter().any(|a| accepted.contains(a)) {
            return Err(TokenError::Audience);
        }
        let k8s = &claims["kubernetes.io"];
        Ok(TokenClaims {
            namespace: k8s["namespace"].as_str().unwrap_or_default().into(),
            service_account: k8s["serviceaccount"]["name"]
                .as_str()
                .unwrap_or_default()
                .into(),
            service_account_uid: k8s["serviceaccount"]["uid"]
                .as_str()
                .unwrap_or_default()
                .into(),
            audiences: token_aud,
            expires: exp,
            pod: k8s["pod"]["name"].as_str().map(|name| {
                (
                    name.to_string(),
                    k8s["pod"]["uid"].as_str().unwrap_or_default().to_string(),
                )
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> TokenAuthority {
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        TokenAuthority::new(&pem, "cluster.local").unwrap()
    }

    fn claims(expires: i64, aud: &str) -> TokenClaims {
        TokenClaims {
            namespace: "default".into(),
            service_account: "builder".into(),
            service_account_uid: "u-1".into(),
            audiences: vec![aud.into()],
            expires,
            pod: None,
        }
    }

    #[test]
    fn a_pod_bound_token_names_its_pod() {
        let a = authority();
        let mut c = claims(now_secs() + 600, &a.issuer);
        c.pod = Some(("web-1".into(), "pod-uid".into()));
        let got = a.verify(&a.issue(&c).unwrap(), &[]).unwrap();
        assert_eq!(got.pod, Some(("web-1".into(), "pod-uid".into())));
        let unbound = a.verify(&a.issue(&claims(now_secs() + 600, &a.issuer)).unwrap(), &[]);
        assert_eq!(unbound.unwrap().pod, None);
    }

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let a = authority();
        let token = a.issue(&claims(now_secs() + 600, &a.issuer)).unwrap();
        let got = a.verify(&token, &[]).unwrap();
        assert_eq!(got.user().name, "system:serviceaccount:default:builder");
        assert!(
            got.user()
                .groups
                .contains(&"system:serviceaccounts:default".to_string())
        );
        // tampering, expiry, audience, another key
        let mut forged = token.clone();
        forged.replace_range(token.len() - 5.., "AAAAA");
        assert!(a.verify(&forged, &[]).is_err());
        assert_eq!(
            a.verify(&a.issue(&claims(now_secs() - 1, &a.issuer)).unwrap(), &[])
                .unwrap_err(),
            TokenError::Expired
        );
        assert_eq!(
            a.verify(&a.issue(&claims(now_secs() + 600, "vault")).unwrap(), &[])
                .unwrap_err(),
            TokenError::Audience
        );
        assert!(
            a.verify(
                &a.issue(&claims(now_secs() + 600, "vault")).unwrap(),
                &["vault".into()]
            )
            .is_ok()
        );
        assert_eq!(
            authority().verify(&token, &[]).unwrap_err(),
            TokenError::Signature
        );
        assert_eq!(a.verify("a.b", &[]).unwrap_err(), TokenError::NotJwt);
        assert_eq!(TokenError::Expired.to_string(), "token has expired");
    }
}
