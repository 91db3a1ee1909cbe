//! Passwords out of URLs, for every message, log line and `Debug` that shows one. A file of its
//! own because every part of the configuration shows URLs (the connect options, the replicas and
//! host lists, the session URL), and none of them should depend on another for it.

/// The URL with its password replaced by `****`.
///
/// Read from the text rather than parsed, so a host list (`h1:5432,h2:5432`), which is not a
/// URL the `url` crate accepts, is masked too.
pub(super) fn masked_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable url>".into();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:****{}", &rest[at..]),
        None => url.to_string(),
    }
}
