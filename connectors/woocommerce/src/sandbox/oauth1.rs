//! OAuth 1.0a one-legged signatures (RFC 5849, HMAC-SHA1 and HMAC-SHA256), as WooCommerce checks
//! them on plain-HTTP requests. Written here, not taken from a client crate, so that the connector
//! (which signs with a maintained crate) and the sandbox check each other.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};

/// RFC 3986 percent-encoding as RFC 5849 §3.6 wants it: only `A-Z a-z 0-9 - . _ ~` stay.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The signature base string (RFC 5849 §3.4.1): `METHOD&enc(base URL)&enc(normalised params)`,
/// where the params (already decoded; `oauth_signature` left out) are encoded, sorted by name then
/// value, and joined with `=` and `&`.
pub fn base_string(method: &str, base_url: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> =
        params.iter().filter(|(k, _)| k != "oauth_signature").map(|(k, v)| (encode(k), encode(v))).collect();
    encoded.sort();
    let joined: Vec<String> = encoded.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}&{}&{}", method.to_ascii_uppercase(), encode(base_url), encode(&joined.join("&")))
}

/// Which HMAC an `oauth_signature_method` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    HmacSha1,
    HmacSha256,
}

impl Method {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "HMAC-SHA1" => Some(Self::HmacSha1),
            "HMAC-SHA256" => Some(Self::HmacSha256),
            _ => None,
        }
    }
}

/// The base64 signature of `base` with key `enc(consumer_secret)&enc(token_secret)`.
pub fn sign(method: Method, base: &str, consumer_secret: &str, token_secret: &str) -> String {
    let key = format!("{}&{}", encode(consumer_secret), encode(token_secret));
    let digest = match method {
        Method::HmacSha1 => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
            mac.update(base.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Method::HmacSha256 => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
            mac.update(base.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Constant-time comparison of two signatures.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The parameters of an `Authorization: OAuth k="v", ...` header, decoded.
pub fn parse_header(header: &str) -> Vec<(String, String)> {
    let Some(rest) = header.trim().strip_prefix("OAuth ") else { return Vec::new() };
    rest.split(',')
        .filter_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            let v = v.trim().trim_matches('"');
            Some((decode(k.trim()), decode(v)))
        })
        .filter(|(k, _)| k != "realm")
        .collect()
}

/// Percent-decoding; `+` is a space in query strings.
pub fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example from Twitter's "Creating a signature" documentation (HMAC-SHA1 over
    /// RFC 5849 §3.4.1), widely used as a reference vector by OAuth 1.0a libraries.
    #[test]
    fn the_published_twitter_example_verifies() {
        let params: Vec<(String, String)> = [
            ("status", "Hello Ladies + Gentlemen, a signed OAuth request!"),
            ("include_entities", "true"),
            ("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
            ("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1318622958"),
            ("oauth_token", "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
            ("oauth_version", "1.0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let base = base_string("post", "https://api.twitter.com/1/statuses/update.json", &params);
        assert_eq!(
            base,
            "POST&https%3A%2F%2Fapi.twitter.com%2F1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue%26oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog%26oauth_nonce%3DkYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1318622958%26oauth_token%3D370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb%26oauth_version%3D1.0%26status%3DHello%2520Ladies%2520%252B%2520Gentlemen%252C%2520a%2520signed%2520OAuth%2520request%2521"
        );
        let signature = sign(
            Method::HmacSha1,
            &base,
            "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
        );
        assert_eq!(signature, "tnnArxj06cWHq44gCs1OSKk/jLY=");
    }

    #[test]
    fn header_params_are_decoded() {
        let params = parse_header(r#"OAuth realm="x", oauth_consumer_key="ck_1", oauth_signature="a%2Bb%3D""#);
        assert_eq!(
            params,
            vec![("oauth_consumer_key".into(), "ck_1".into()), ("oauth_signature".into(), "a+b=".into())]
        );
    }
}
