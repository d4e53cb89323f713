//! The webhook HTTP client, safe against server-side request forgery: an operator's URL must
//! not become a way into the service's own network. Only `https` (plain `http` when allowed);
//! no user name or password in the URL; no proxy from the environment (a proxy would resolve
//! names where we cannot check them); no redirect followed; a whole-delivery timeout. Every
//! address is checked when connecting, not when configuring: the resolver drops loopback,
//! private, shared, link-local, unique-local, unspecified, broadcast and multicast addresses
//! (IPv4-mapped IPv6 included), so a name that resolves elsewhere later (DNS rebinding) is
//! refused all the same; an IP literal, which reqwest does not resolve, is checked before the
//! request. `allow_private_networks` lifts the address rule, for a receiver on the same
//! machine or network (a local n8n).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

/// Whether webhooks may not reach `ip` (unless private networks are allowed).
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                // 100.64.0.0/10, carrier-grade NAT (shared address space)
                || (a == 100 && (64..128).contains(&b))
                // 192.0.0.0/24, IETF protocol assignments
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                // 198.18.0.0/15, benchmarking
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => match embedded_ipv4(&v6) {
            Some(v4) => forbidden(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    // ::/96, IPv4-compatible (deprecated) addresses
                    || v6.segments()[..6] == [0; 6]
                    // fec0::/10, site-local (deprecated, still routed on some networks)
                    || (v6.segments()[0] & 0xffc0) == 0xfec0
            }
        },
    }
}

/// The IPv4 address an IPv6 address carries to a v4 host: IPv4-mapped (`::ffff:0:0/96`),
/// NAT64 (`64:ff9b::/96`, RFC 6052; a NAT64 gateway forwards it to that v4 address) and 6to4
/// (`2002::/16`, the address in bits 16–48). Each is judged as the v4 address it reaches.
fn embedded_ipv4(v6: &std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let o = v6.octets();
    match v6.segments() {
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15])),
        [0x2002, ..] => Some(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// What the operator allowed beyond the safe defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// `http://` URLs as well as `https://`.
    pub allow_http: bool,
    /// Loopback and private addresses (a receiver on this machine or network).
    pub allow_private_networks: bool,
}

/// Checks a URL before any request: scheme, no credentials, a host, and an IP literal's
/// address. The message names the rule, never the URL's path or query.
pub fn check_url(url: &Url, reach: Reach) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" if reach.allow_http => {}
        "http" => {
            return Err(
                "http:// is refused: use https://, or set CONNECT_WEBHOOK_ALLOW_HTTP=true for a \
                 receiver without TLS"
                    .into(),
            );
        }
        other => return Err(format!("{other}:// is not an HTTP URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "a user name or password in the URL is refused (it would be logged and \
                    stored); authenticate with the webhook signature"
                .into(),
        );
    }
    let ip = match url.host() {
        None => return Err("the URL has no host".into()),
        Some(url::Host::Domain(_)) => return Ok(()),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
    };
    if forbidden(ip) && !reach.allow_private_networks {
        return Err(format!(
            "{ip} is a loopback, private or otherwise internal address; set \
             CONNECT_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true for a receiver on this machine or network"
        ));
    }
    Ok(())
}

/// Resolves names and keeps only the addresses webhooks may reach.
struct FilteringResolver {
    allow_private_networks: bool,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private_networks;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| allow_private || !forbidden(addr.ip()))
                .collect();
            if allowed.is_empty() {
                let why: Box<dyn std::error::Error + Send + Sync> = if found.is_empty() {
                    format!("{host} has no address").into()
                } else {
                    format!(
                        "{host} resolves only to loopback, private or otherwise internal \
                         addresses (refused; CONNECT_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true allows them)"
                    )
                    .into()
                };
                return Err(why);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client every delivery goes through.
pub fn client(reach: Reach, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(FilteringResolver {
            allow_private_networks: reach.allow_private_networks,
        }))
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!(
            "celeste-connect-webhooks/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_forbidden_and_public_ones_are_not() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            // NAT64 and 6to4 forms of the metadata address and of private ones
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.0.0.1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:0101::",
            "fec0::1",
        ] {
            assert!(forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_credentials_and_literal_addresses() {
        let url = |s: &str| Url::parse(s).unwrap();
        let strict = Reach::default();
        assert!(check_url(&url("https://hooks.example.com/x"), strict).is_ok());
        assert!(check_url(&url("http://hooks.example.com/x"), strict).is_err());
        assert!(check_url(&url("https://user:pw@hooks.example.com/x"), strict).is_err());
        assert!(check_url(&url("https://127.0.0.1/x"), strict).is_err());
        assert!(check_url(&url("https://[::1]/x"), strict).is_err());
        assert!(check_url(&url("ftp://hooks.example.com/x"), strict).is_err());
        let local = Reach {
            allow_http: true,
            allow_private_networks: true,
        };
        assert!(check_url(&url("http://127.0.0.1:5678/webhook/x"), local).is_ok());
        let message =
            check_url(&url("https://10.0.0.1/secret-path?token=abc"), strict).unwrap_err();
        assert!(
            !message.contains("secret-path") && !message.contains("abc"),
            "{message}"
        );
    }
}
