//! The Redis deployment named by `tickets.store`: one server
//! (`redis://`, `rediss://`), a Redis Cluster (`redis+cluster://h1:p1,h2:p2`)
//! or a Sentinel-watched primary
//! (`redis+sentinel://s1:26379,s2:26379/<service>`); the `rediss` forms use
//! TLS.

use std::fmt;

/// A parsed, not yet connected, Redis deployment.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, as a URL the `redis` crate reads.
    Single(String),
    /// Seed nodes of a cluster, each as a `redis://` / `rediss://` URL.
    Cluster(Vec<String>),
    /// Sentinel nodes (as URLs) and the name of the service they watch.
    Sentinel {
        sentinels: Vec<String>,
        service: String,
        tls: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRedisUrl(String);

impl RedisTarget {
    pub fn parse(url: &str) -> Result<RedisTarget, BadRedisUrl> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            BadRedisUrl(format!(
                "{:?} is neither \"memory\" nor a redis:// URL",
                redacted(url)
            ))
        })?;
        let plain = match scheme {
            "redis" | "redis+cluster" | "redis+sentinel" => "redis",
            "rediss" | "rediss+cluster" | "rediss+sentinel" => "rediss",
            _ => {
                return Err(BadRedisUrl(format!(
                    "{:?} is neither \"memory\" nor a redis://, rediss://, redis+cluster:// or redis+sentinel:// URL",
                    redacted(url)
                )))
            }
        };
        let (credentials, hosts_and_path) = match rest.rsplit_once('@') {
            Some((credentials, after)) => (Some(credentials), after),
            None => (None, rest),
        };
        let (hosts, path) = match hosts_and_path.split_once('/') {
            Some((hosts, path)) => (hosts, Some(path)),
            None => (hosts_and_path, None),
        };
        let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
        if hosts.is_empty() {
            return Err(BadRedisUrl(format!("{:?} names no host", redacted(url))));
        }
        let node_url = |host: &str, path: Option<&str>| {
            let mut node = format!("{plain}://");
            if let Some(credentials) = credentials {
                node.push_str(credentials);
                node.push('@');
            }
            node.push_str(host);
            if let Some(path) = path.filter(|p| !p.is_empty()) {
                node.push('/');
                node.push_str(path);
            }
            node
        };
        let target = if scheme.ends_with("+cluster") {
            if path.is_some_and(|p| !p.is_empty()) {
                return Err(BadRedisUrl(
                    "a Redis Cluster has no databases: drop the /path".into(),
                ));
            }
            RedisTarget::Cluster(hosts.iter().map(|h| node_url(h, None)).collect())
        } else if scheme.ends_with("+sentinel") {
            let mut parts = path.unwrap_or("").splitn(2, '/');
            let service = parts.next().unwrap_or("").to_string();
            if service.is_empty() {
                return Err(BadRedisUrl(
                    "a redis+sentinel:// URL ends with /<service name> (e.g. /mymaster)".into(),
                ));
            }
            RedisTarget::Sentinel {
                sentinels: hosts.iter().map(|h| node_url(h, None)).collect(),
                service,
                tls: scheme.starts_with("rediss"),
            }
        } else {
            if hosts.len() > 1 {
                return Err(BadRedisUrl(
                    "several hosts need redis+cluster:// or redis+sentinel://".into(),
                ));
            }
            let single = node_url(hosts[0], path);
            redis::IntoConnectionInfo::into_connection_info(single.as_str()).map_err(|err| {
                BadRedisUrl(format!("{:?} is not a Redis URL: {err}", redacted(url)))
            })?;
            RedisTarget::Single(single)
        };
        Ok(target)
    }
}

/// The URL with any password replaced, for messages and logs.
pub fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, after))) => format!("{scheme}://…@{after}"),
        _ => url.to_string(),
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Single(url) => write!(f, "Single({})", redacted(url)),
            RedisTarget::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| redacted(n)).collect();
                write!(f, "Cluster({nodes:?})")
            }
            RedisTarget::Sentinel {
                sentinels, service, ..
            } => {
                let nodes: Vec<String> = sentinels.iter().map(|n| redacted(n)).collect();
                write!(f, "Sentinel({nodes:?}, {service})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_deployments_parse() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/2").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            RedisTarget::parse("rediss+cluster://u:p@a:7000,b:7001").unwrap(),
            RedisTarget::Cluster(vec![
                "rediss://u:p@a:7000".into(),
                "rediss://u:p@b:7001".into()
            ])
        );
        assert_eq!(
            RedisTarget::parse("redis+sentinel://s1:26379,s2:26379/mymaster").unwrap(),
            RedisTarget::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                service: "mymaster".into(),
                tls: false
            }
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        for (url, expected) in [
            ("postgres://x", "neither"),
            ("redis+cluster://", "names no host"),
            ("redis+sentinel://s1:26379", "service name"),
            ("redis://a:1,b:2", "redis+cluster"),
            ("redis+cluster://a:1/3", "no databases"),
        ] {
            let err = RedisTarget::parse(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
        let err = RedisTarget::parse("ftp://user:hunter2@host")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let debug = format!("{:?}", RedisTarget::parse("redis://:hunter2@h:1").unwrap());
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
