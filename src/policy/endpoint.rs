//! Mirror endpoints as K3s normalises them (`normalizeEndpointAddress`), reduced to what an image
//! reference can say: a registry host and, for the Anthos `/v2/<namespace>` form, a path prefix.

use crate::reference::{is_domain, is_path_component};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// As a URL writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// The registry as image references write it (`docker.io` for Docker Hub's hosts).
    pub host: String,
    /// `namespace/` for an endpoint `/v2/namespace`, else empty.
    pub prefix: String,
    /// The API root, normalised: `https://host:port/v2[/namespace]`.
    pub url: String,
}

/// Why an endpoint cannot be used, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointError {
    pub message: String,
    pub hint: Option<String>,
}

fn err(message: impl Into<String>, hint: Option<&str>) -> EndpointError {
    EndpointError {
        message: message.into(),
        hint: hint.map(str::to_owned),
    }
}

/// Whether `host` reads as a registry when it is the first component of an image reference.
pub(crate) fn reads_as_registry(host: &str) -> bool {
    host == "localhost" || host.contains(['.', ':'])
}

fn is_loopback(host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(h, p)| !h.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    name == "localhost" || name == "[::1]" || name.starts_with("127.")
}

fn port(host: &str) -> Option<&str> {
    let after_v6 = host.rsplit_once(']').map_or(host, |(_, rest)| rest);
    after_v6.rsplit_once(':').map(|(_, p)| p)
}

/// The scheme a URL names, if it names one, and the rest.
fn split_scheme(raw: &str) -> Result<(Option<Scheme>, &str), EndpointError> {
    let Some((s, rest)) = raw.split_once("://") else {
        return Ok((None, raw));
    };
    match s.to_ascii_lowercase().as_str() {
        "https" => Ok((Some(Scheme::Https), rest)),
        "http" => Ok((Some(Scheme::Http), rest)),
        _ => Err(err(
            format!("unsupported scheme `{s}`"),
            Some("use http:// or https://"),
        )),
    }
}

/// The mirror namespace of `/v2/<namespace>`; no path or `/v2` is none. Any other path is an API
/// root of its own.
fn namespace_of(path: &str) -> Result<&str, EndpointError> {
    match path.trim_end_matches('/') {
        "" | "/v2" => Ok(""),
        p => match p.strip_prefix("/v2/") {
            Some(ns) if ns.split('/').all(is_path_component) => Ok(ns),
            _ => Err(err(
                format!(
                    "endpoint path `{path}` is an API root of its own, which no image reference can express"
                ),
                Some("use no path, or `/v2/<namespace>` to pull from a namespace of the mirror"),
            )),
        },
    }
}

pub fn parse(raw: &str) -> Result<Endpoint, EndpointError> {
    if raw.is_empty() {
        return Err(err("empty endpoint", None));
    }
    if raw.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(err("endpoint contains white space", None));
    }
    let (scheme, rest) = split_scheme(raw)?;
    if rest.contains(['?', '#']) {
        return Err(err(
            "an endpoint has no query or fragment",
            Some("remove the text from `?` or `#` on"),
        ));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(err(
            "credentials in the endpoint URL are not supported",
            Some("put them under configs.<host>.auth"),
        ));
    }
    if !is_domain(authority) {
        return Err(err(
            format!("`{authority}` is not a valid host[:port]"),
            None,
        ));
    }
    // K3s: no scheme means https, except loopback on a port other than 443.
    let scheme = scheme.unwrap_or(
        if is_loopback(authority) && port(authority) != Some("443") {
            Scheme::Http
        } else {
            Scheme::Https
        },
    );
    let host = crate::reference::canonical_host(authority);
    if !reads_as_registry(host) {
        return Err(err(
            format!("images on `{host}` would read as Docker Hub images (`docker.io/{host}/...`)"),
            Some("name the registry with a dot or a port, e.g. `mirror.local` or `mirror:5000`"),
        ));
    }
    let namespace = namespace_of(path)?;
    let scheme_text = scheme.as_str();
    let (prefix, url) = if namespace.is_empty() {
        (String::new(), format!("{scheme_text}://{authority}/v2"))
    } else {
        (
            format!("{namespace}/"),
            format!("{scheme_text}://{authority}/v2/{namespace}"),
        )
    };
    Ok(Endpoint {
        scheme,
        host: host.to_owned(),
        prefix,
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalise_as_k3s_does() {
        let ok = [
            (
                "https://mirror.example.com:5000",
                Scheme::Https,
                "mirror.example.com:5000",
                "",
            ),
            (
                "mirror.example.com",
                Scheme::Https,
                "mirror.example.com",
                "",
            ),
            (
                "http://mycustomreg.com:5000",
                Scheme::Http,
                "mycustomreg.com:5000",
                "",
            ),
            ("localhost:5000", Scheme::Http, "localhost:5000", ""),
            ("localhost:443", Scheme::Https, "localhost:443", ""),
            ("127.0.0.1:5000/v2", Scheme::Http, "127.0.0.1:5000", ""),
            ("[::1]:5000", Scheme::Http, "[::1]:5000", ""),
            (
                "https://registry-1.docker.io",
                Scheme::Https,
                "docker.io",
                "",
            ),
            ("https://r.example.com/", Scheme::Https, "r.example.com", ""),
            (
                "https://r.example.com/v2/",
                Scheme::Https,
                "r.example.com",
                "",
            ),
            (
                "https://172.18.0.20:5000/v2/test-namespace",
                Scheme::Https,
                "172.18.0.20:5000",
                "test-namespace/",
            ),
            (
                "https://h.example.com/v2/a/b/",
                Scheme::Https,
                "h.example.com",
                "a/b/",
            ),
            ("HTTPS://h.example.com", Scheme::Https, "h.example.com", ""),
        ];
        for (raw, scheme, host, prefix) in ok {
            let e = parse(raw).unwrap_or_else(|e| panic!("{raw}: {e:?}"));
            assert_eq!(
                (e.scheme, e.host.as_str(), e.prefix.as_str()),
                (scheme, host, prefix),
                "{raw}"
            );
        }
        let bad = [
            "",
            "ftp://x.example.com",
            "https://user:pw@x.example.com",
            "https://x.example.com/artifactory/api/docker",
            "https://x.example.com/v2/UPPER",
            "https://mirror",
            "https://x.example.com?ns=1",
            "https://bad_host.example.com",
            " https://x.example.com",
            "https://x.example.com:port",
        ];
        for raw in bad {
            assert!(parse(raw).is_err(), "{raw} should be refused");
        }
    }
}
