//! Amazon ECR registries and their tokens (pure): which hosts are ECR, what a
//! GetAuthorizationToken answer means, and when a token is refreshed. The AWS calls are in
//! `credentials`.

use std::time::Duration;

use base64::Engine;

/// An ECR registry, as its host names it: `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registry {
    pub account: String,
    pub region: String,
    pub fips: bool,
}

/// The DNS suffixes of AWS partitions that serve ECR, as the AWS credential provider knows them.
const SUFFIXES: &[&str] = &[
    "amazonaws.com",
    "amazonaws.com.cn",
    "sc2s.sgov.gov",
    "c2s.ic.gov",
    "cloud.adc-e.uk",
    "csp.hci.ic.gov",
];

/// The ECR registry `host` names, if it is one (no port: ECR serves on 443 only).
pub fn parse_host(host: &str) -> Option<Registry> {
    let (account, rest) = host.split_once('.')?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = rest
        .strip_prefix("dkr.ecr")
        .or_else(|| rest.strip_prefix("dkr-ecr"))?;
    let (fips, rest) = match rest.strip_prefix("-fips") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (region, suffix) = rest.strip_prefix('.')?.split_once('.')?;
    let region_ok = region
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (region_ok && SUFFIXES.contains(&suffix)).then(|| Registry {
        account: account.to_owned(),
        region: region.to_owned(),
        fips,
    })
}

/// The password of an ECR authorization token (`base64("AWS:<password>")`), as
/// `aws ecr get-login-password` prints it.
pub fn password_of(authorization_token: &str) -> Result<String, PasswordError> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(authorization_token.trim())
        .map_err(|_| PasswordError::NotBase64)?;
    let text = String::from_utf8(decoded).map_err(|_| PasswordError::NotBase64)?;
    match text.split_once(':') {
        Some(("AWS", password)) if !password.is_empty() => Ok(password.to_owned()),
        _ => Err(PasswordError::NotAwsUser),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("the authorization token is not base64 text")]
    NotBase64,
    #[error("the authorization token is not `AWS:<password>`")]
    NotAwsUser,
}

/// The shortest wait between two fetches of one registry's token, whatever its expiry says.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

/// A token whose expiry is already past when it arrives (a clock apart from AWS's) is used, and
/// fetched again this soon.
pub const PAST_EXPIRY_REFRESH: Duration = Duration::from_secs(60);

/// How long after a fetch the token is fetched again: at half its remaining life (ECR tokens
/// live 12 hours), never later than `max`, never sooner than `MIN_REFRESH`. A token that came
/// without an expiry is refetched after `max`; one already expired (`Some(0)`) after
/// `PAST_EXPIRY_REFRESH`.
pub fn refresh_after(life: Option<Duration>, max: Duration) -> Duration {
    let wanted = match life {
        None => max,
        Some(l) if l.is_zero() => PAST_EXPIRY_REFRESH,
        Some(l) => l / 2,
    };
    wanted.min(max).max(MIN_REFRESH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_are_recognised_as_the_aws_provider_does() {
        let r = parse_host("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert_eq!(
            (r.account.as_str(), r.region.as_str(), r.fips),
            ("123456789012", "us-east-1", false)
        );
        let r = parse_host("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com").unwrap();
        assert!(r.fips);
        assert_eq!(
            parse_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn")
                .unwrap()
                .region,
            "cn-north-1"
        );
        for not in [
            "ACCOUNTID.dkr.ecr.REGION.amazonaws.com"
                .to_lowercase()
                .as_str(),
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:443",
            "123456789012.dkr.ecr.us-east-1.example.com",
            "public.ecr.aws",
            "123456789012.ecr.us-east-1.amazonaws.com",
        ] {
            assert_eq!(parse_host(not), None, "{not}");
        }
    }

    #[test]
    fn a_token_is_aws_and_a_password() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:secret-pw");
        assert_eq!(password_of(&token).unwrap(), "secret-pw");
        let other = base64::engine::general_purpose::STANDARD.encode("root:pw");
        assert_eq!(password_of(&other), Err(PasswordError::NotAwsUser));
        assert_eq!(password_of("%%%"), Err(PasswordError::NotBase64));
    }

    #[test]
    fn refresh_is_at_half_life_within_bounds() {
        let h = Duration::from_secs(3600);
        assert_eq!(refresh_after(Some(12 * h), 24 * h), 6 * h);
        assert_eq!(refresh_after(Some(12 * h), h), h);
        assert_eq!(refresh_after(None, h), h);
        assert_eq!(refresh_after(Some(Duration::ZERO), h), PAST_EXPIRY_REFRESH);
        assert_eq!(
            refresh_after(Some(Duration::from_millis(10)), h),
            MIN_REFRESH
        );
    }
}
