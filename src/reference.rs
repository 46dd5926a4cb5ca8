//! Image references, parsed and normalised the way distribution/reference's `ParseNormalizedNamed`
//! does (including go-digest's digest checks), so that the webhook reads a reference exactly as the
//! container runtime will.

use std::fmt;

pub const DOCKER_HUB: &str = "docker.io";
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
/// The other names Docker Hub goes by: its legacy index and its API host.
const DOCKER_HUB_ALIASES: [&str; 2] = [LEGACY_DOCKER_HUB, "registry-1.docker.io"];

/// `docker.io` for any of Docker Hub's names, else the host as it is.
pub fn canonical_host(host: &str) -> &str {
    match DOCKER_HUB_ALIASES.contains(&host) {
        true => DOCKER_HUB,
        false => host,
    }
}

pub fn is_docker_hub(host: &str) -> bool {
    canonical_host(host) == DOCKER_HUB
}
const OFFICIAL_PREFIX: &str = "library/";
const MAX_PATH_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalised image reference. Tag and digest are kept exactly as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
    /// Whether the text named its registry, rather than leaving Docker Hub implied.
    domain_written: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty reference")]
    Empty,
    #[error("a 64-character hexadecimal string is an image ID, not a reference")]
    HexIdentifier,
    #[error("repository name must be lowercase")]
    Uppercase,
    #[error("invalid reference format: {0}")]
    Format(&'static str),
    #[error("repository path is {0} characters long; at most {MAX_PATH_LEN} are allowed")]
    NameTooLong(usize),
    #[error("unsupported digest algorithm `{0}` (use sha256 or sha512)")]
    DigestUnsupported(String),
    #[error("invalid digest length: {algorithm} needs {expected} hex digits, found {found}")]
    DigestLength {
        algorithm: String,
        expected: usize,
        found: usize,
    },
    #[error("invalid digest: hex digits must be lower-case")]
    DigestFormat,
}

impl Reference {
    /// `ParseNormalizedNamed`: decides the registry, adds `docker.io` and `library/`, validates.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::HexIdentifier);
        }
        let (domain, remainder, domain_written) = split_domain(s);
        let remote = remainder.split(':').next().unwrap_or_default();
        let official = domain == DOCKER_HUB && !remainder.contains('/');
        if remote.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase);
        }
        let parsed = match parse_parts(domain, remainder, official) {
            Err(ReferenceError::Format(why)) => {
                // Mirrors `Parse`: an input that is valid but for its case gets the clearer message.
                let lower = format!("{}/{}", domain, remainder).to_ascii_lowercase();
                let (d, r) = lower.split_once('/').unwrap_or_default();
                return Err(match parse_parts(d, r, official) {
                    Ok(_) => ReferenceError::Uppercase,
                    Err(_) => ReferenceError::Format(why),
                });
            }
            other => other?,
        };
        Ok(Reference {
            domain_written,
            ..parsed
        })
    }

    /// The registry host (with port), or "" for the rare reference that parses without one
    /// (`foo_bar.com/app`, whose first component is not valid host syntax).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    pub fn domain_written(&self) -> bool {
        self.domain_written
    }

    /// `domain/path`, the repository's full name.
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// `:tag@digest`, as written (either part may be missing).
    pub fn suffix(&self) -> String {
        let mut out = String::new();
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(d);
        }
        out
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.domain.is_empty() {
            write!(f, "{}/", self.domain)?;
        }
        f.write_str(&self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `splitDockerDomain`: the first component names a registry when it is `localhost`, holds a `.`
/// or `:`, or has an upper-case letter; otherwise the image lives on Docker Hub.
fn split_domain(s: &str) -> (&str, &str, bool) {
    match s.split_once('/') {
        Some((first, rest))
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            let domain = if first == LEGACY_DOCKER_HUB {
                DOCKER_HUB
            } else {
                first
            };
            (domain, rest, true)
        }
        _ => (DOCKER_HUB, s, false),
    }
}

/// `Parse(domain + "/" + remainder)`: the grammar first, then the path length, then the digest.
fn parse_parts(domain: &str, remainder: &str, official: bool) -> Result<Reference, ReferenceError> {
    let name_end = remainder.find([':', '@']).unwrap_or(remainder.len());
    let (name, rest) = remainder.split_at(name_end);
    let (tag, digest) = split_suffix(rest)?;
    let name_ok = name.split('/').all(is_path_component);
    if !name_ok {
        return Err(ReferenceError::Format(
            "path components are lower-case letters and digits joined by `.`, `_`, `__` or dashes",
        ));
    }
    let (domain, path) = if is_domain(domain) {
        let path = if official {
            format!("{OFFICIAL_PREFIX}{name}")
        } else {
            name.to_owned()
        };
        (domain.to_owned(), path)
    } else if is_path_component(domain) {
        // The whole name still matches the path grammar, so `Parse` accepts it with no domain.
        (String::new(), format!("{domain}/{name}"))
    } else {
        return Err(ReferenceError::Format(
            "the registry is not a valid host[:port]",
        ));
    };
    if path.len() > MAX_PATH_LEN {
        return Err(ReferenceError::NameTooLong(path.len()));
    }
    if let Some(d) = digest {
        validate_digest(d)?;
    }
    Ok(Reference {
        domain,
        path,
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
        domain_written: true,
    })
}

/// Splits `[:tag][@digest]`, checking each against the reference grammar.
fn split_suffix(rest: &str) -> Result<(Option<&str>, Option<&str>), ReferenceError> {
    let (tag_part, digest) = match rest.split_once('@') {
        Some((t, d)) => (t, Some(d)),
        None => (rest, None),
    };
    let tag = match tag_part.strip_prefix(':') {
        Some(t) => Some(t),
        None if tag_part.is_empty() => None,
        None => return Err(ReferenceError::Format("unexpected text after the name")),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return Err(ReferenceError::Format(
                "a tag is up to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`",
            ));
        }
    }
    if let Some(d) = digest {
        if !is_digest_syntax(d) {
            return Err(ReferenceError::Format(
                "a digest is `algorithm:hex` after the tag (name:tag@sha256:...)",
            ));
        }
    }
    Ok((tag, digest))
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*`
pub(crate) fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !b.get(i).copied().is_some_and(is_alnum_lower) {
            return false;
        }
    }
    true
}

/// `host[:port]` where host is a DNS-style name, an IPv4 address, or a bracketed IPv6 address.
pub(crate) fn is_domain(s: &str) -> bool {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(p) => (None, Some(p)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => h.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        }),
    }
}

fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |x: &u8| x.is_ascii_alphanumeric() || *x == b'_';
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && word(&b[0])
        && b.iter().all(|x| word(x) || *x == b'.' || *x == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)* : [0-9A-Fa-f]{32,}`
fn is_digest_syntax(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `d` is a digest a reference may carry (`sha256:<64 hex>`, `sha512:<128 hex>`).
pub fn is_valid_digest(d: &str) -> bool {
    is_digest_syntax(d) && validate_digest(d).is_ok()
}

/// go-digest's `Validate`: a registered algorithm, its exact length, lower-case hex.
fn validate_digest(d: &str) -> Result<(), ReferenceError> {
    let (alg, hex) = d.split_once(':').unwrap_or((d, ""));
    let expected = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(ReferenceError::DigestUnsupported(alg.to_owned())),
    };
    if hex.len() != expected {
        return Err(ReferenceError::DigestLength {
            algorithm: alg.to_owned(),
            expected,
            found: hex.len(),
        });
    }
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ReferenceError::DigestFormat);
    }
    Ok(())
}
