//! Who is asking, what they may see, and whether a state-changing request comes from the
//! console's own page. Pure functions of the request headers, so the rules are unit-tested.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use axum::http::{HeaderMap, Method, header};

/// The cookie holding an agent's token after `/login`: `HttpOnly; SameSite=Strict`.
pub const COOKIE: &str = "moodstream_console";

/// The tenants an agent may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    All,
    Only(BTreeSet<String>),
}

impl Tenants {
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            Tenants::All => true,
            Tenants::Only(set) => set.contains(tenant),
        }
    }

    /// `*` for all, else a comma-separated list (`-` for messages without a tenant).
    pub fn parse(s: &str) -> Tenants {
        let items: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if items.contains(&"*") {
            return Tenants::All;
        }
        Tenants::Only(
            items
                .into_iter()
                .map(|t| {
                    if t == "-" {
                        String::new()
                    } else {
                        t.to_string()
                    }
                })
                .collect(),
        )
    }
}

/// An authenticated agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub agent_id: String,
    pub tenants: Tenants,
    /// Authenticated by the cookie (a browser session): state changes need a same-origin proof.
    pub via_cookie: bool,
}

/// How agents are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Loopback only: everyone who can connect is this agent and sees every tenant.
    Local { agent_id: String },
    /// Per-agent tokens from a secret file.
    Tokens(HashMap<String, (String, Tenants)>),
    /// Behind an authenticating proxy (oauth2-proxy): the identity is in headers the proxy sets.
    Proxy {
        user_header: String,
        groups_header: String,
        tenant_group_prefix: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenFileError {
    #[error("cannot read the token file: {0}")]
    Read(String),
    #[error("token file line {0}: expected `<token> <agent id> <tenants|*>`")]
    Line(usize),
    #[error("token file line {0}: tokens must be at least 16 characters")]
    Short(usize),
    #[error("token file line {0}: the token is listed twice")]
    Duplicate(usize),
    #[error("the token file lists no agent")]
    Empty,
}

/// Parses a token file: one agent per line, `<token> <agent id> <tenant,tenant|*>`; `#` comments.
pub fn parse_tokens(text: &str) -> Result<HashMap<String, (String, Tenants)>, TokenFileError> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [token, agent, tenants] = fields[..] else {
            return Err(TokenFileError::Line(i + 1));
        };
        if token.len() < 16 {
            return Err(TokenFileError::Short(i + 1));
        }
        if out
            .insert(
                token.to_string(),
                (agent.to_string(), Tenants::parse(tenants)),
            )
            .is_some()
        {
            return Err(TokenFileError::Duplicate(i + 1));
        }
    }
    if out.is_empty() {
        return Err(TokenFileError::Empty);
    }
    Ok(out)
}

pub fn load_tokens(path: &Path) -> Result<HashMap<String, (String, Tenants)>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| TokenFileError::Read(e.to_string()))?;
    parse_tokens(&text)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Compares without an early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// The agent making the request, or `None` (401).
    pub fn identify(&self, headers: &HeaderMap) -> Option<Identity> {
        match self {
            Auth::Local { agent_id } => Some(Identity {
                agent_id: agent_id.clone(),
                tenants: Tenants::All,
                via_cookie: true,
            }),
            Auth::Tokens(_) => {
                let bearer = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                let (token, via_cookie) = match bearer {
                    Some(t) => (t.trim(), false),
                    None => (cookie(headers, COOKIE)?, true),
                };
                self.token_identity(token)
                    .map(|(agent_id, tenants)| Identity {
                        agent_id,
                        tenants,
                        via_cookie,
                    })
            }
            Auth::Proxy {
                user_header,
                groups_header,
                tenant_group_prefix,
            } => {
                let user = headers.get(user_header)?.to_str().ok()?.trim();
                if user.is_empty() {
                    return None;
                }
                let groups = headers
                    .get(groups_header)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let tenants = groups
                    .split(',')
                    .filter_map(|g| g.trim().strip_prefix(tenant_group_prefix.as_str()))
                    .collect::<Vec<_>>()
                    .join(",");
                Some(Identity {
                    agent_id: user.to_string(),
                    tenants: Tenants::parse(&tenants),
                    // The proxy's session is a cookie too.
                    via_cookie: true,
                })
            }
        }
    }

    /// The agent and tenants of a token (also `/login`'s check).
    pub fn token_identity(&self, token: &str) -> Option<(String, Tenants)> {
        let Auth::Tokens(tokens) = self else {
            return None;
        };
        // Every entry is compared, so the time taken does not tell how close a guess was.
        let mut found = None;
        for (t, who) in tokens {
            if same(t, token) {
                found = Some(who.clone());
            }
        }
        found
    }
}

/// Why a state-changing request was refused as cross-site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossSite {
    /// `Sec-Fetch-Site` says another site (or a sibling subdomain) sent it.
    FetchSite,
    /// `Origin` is not this console's.
    Origin,
    /// A cookie-authenticated request without `Origin` or `Sec-Fetch-Site`: cannot be checked.
    Unverifiable,
}

/// Refuses cross-site state changes. Browsers send `Sec-Fetch-Site` and `Origin` on every
/// `POST`; a request authenticated by an `Authorization` header cannot come from another site
/// (a cross-origin page cannot set it without a CORS preflight, which the console never allows),
/// so non-browser clients with a bearer token need neither.
pub fn same_origin(
    method: &Method,
    headers: &HeaderMap,
    via_cookie: bool,
    allowed_origins: &[String],
) -> Result<(), CrossSite> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if let Some(site) = fetch_site
        && site != "same-origin"
        && site != "none"
    {
        return Err(CrossSite::FetchSite);
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let own = [format!("http://{host}"), format!("https://{host}")];
            if own.iter().any(|o| o == origin) || allowed_origins.iter().any(|o| o == origin) {
                Ok(())
            } else {
                Err(CrossSite::Origin)
            }
        }
        None if via_cookie && fetch_site.is_none() => Err(CrossSite::Unverifiable),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const FILE: &str = "# agents\n\
        aaaaaaaaaaaaaaaa-alice alice acme,globex\n\
        bbbbbbbbbbbbbbbb-bob   bob   *   # supervisor\n";

    fn tokens() -> Auth {
        Auth::Tokens(parse_tokens(FILE).unwrap())
    }

    #[test]
    fn token_file_maps_tokens_to_agents_and_tenants() {
        let t = parse_tokens(FILE).unwrap();
        assert_eq!(t.len(), 2);
        let (agent, tenants) = &t["aaaaaaaaaaaaaaaa-alice"];
        assert_eq!(agent, "alice");
        assert!(tenants.allows("acme") && tenants.allows("globex") && !tenants.allows("initech"));
        assert_eq!(t["bbbbbbbbbbbbbbbb-bob"].1, Tenants::All);
    }

    #[test]
    fn token_file_rejects_short_duplicate_and_malformed_lines() {
        assert_eq!(
            parse_tokens("short alice acme"),
            Err(TokenFileError::Short(1))
        );
        assert_eq!(
            parse_tokens("aaaaaaaaaaaaaaaa alice"),
            Err(TokenFileError::Line(1))
        );
        assert_eq!(
            parse_tokens("aaaaaaaaaaaaaaaa a x\naaaaaaaaaaaaaaaa b y"),
            Err(TokenFileError::Duplicate(2))
        );
        assert_eq!(parse_tokens("# nobody\n"), Err(TokenFileError::Empty));
    }

    #[test]
    fn unknown_or_missing_token_is_not_authenticated() {
        let auth = tokens();
        assert_eq!(auth.identify(&HeaderMap::new()), None);
        assert_eq!(
            auth.identify(&headers(&[("authorization", "Bearer nope-nope-nope-nope")])),
            None
        );
        assert_eq!(
            auth.identify(&headers(&[(
                "cookie",
                "moodstream_console=aaaaaaaaaaaaaaaa-alicX"
            )])),
            None
        );
    }

    #[test]
    fn bearer_and_cookie_tokens_identify_the_agent_with_its_tenants() {
        let auth = tokens();
        let id = auth
            .identify(&headers(&[(
                "authorization",
                "Bearer aaaaaaaaaaaaaaaa-alice",
            )]))
            .unwrap();
        assert_eq!(id.agent_id, "alice");
        assert!(!id.via_cookie);
        assert!(id.tenants.allows("acme") && !id.tenants.allows("initech"));
        let id = auth
            .identify(&headers(&[(
                "cookie",
                "theme=dark; moodstream_console=bbbbbbbbbbbbbbbb-bob",
            )]))
            .unwrap();
        assert_eq!(id.agent_id, "bob");
        assert!(id.via_cookie);
        assert_eq!(id.tenants, Tenants::All);
    }

    #[test]
    fn proxy_identity_comes_from_the_proxy_headers_and_tenant_groups() {
        let auth = Auth::Proxy {
            user_header: "x-forwarded-user".into(),
            groups_header: "x-forwarded-groups".into(),
            tenant_group_prefix: "moodstream-tenant:".into(),
        };
        assert_eq!(auth.identify(&HeaderMap::new()), None);
        let id = auth
            .identify(&headers(&[
                ("x-forwarded-user", "carol@example.com"),
                ("x-forwarded-groups", "staff,moodstream-tenant:acme"),
            ]))
            .unwrap();
        assert_eq!(id.agent_id, "carol@example.com");
        assert!(id.tenants.allows("acme") && !id.tenants.allows("staff"));
        // No tenant group: sees nothing.
        let id = auth
            .identify(&headers(&[("x-forwarded-user", "dave")]))
            .unwrap();
        assert!(!id.tenants.allows("acme") && !id.tenants.allows(""));
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let post = Method::POST;
        let own = [("host", "console.example:8090")];
        let ok = headers(&[
            own[0],
            ("origin", "http://console.example:8090"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(same_origin(&post, &ok, true, &[]), Ok(()));
        let evil = headers(&[own[0], ("origin", "https://evil.example")]);
        assert_eq!(same_origin(&post, &evil, true, &[]), Err(CrossSite::Origin));
        assert_eq!(
            same_origin(&post, &evil, true, &["https://evil.example".to_string()]),
            Ok(()),
            "an explicitly allowed origin (a proxy's public address) passes"
        );
        let sibling = headers(&[
            own[0],
            ("origin", "http://console.example:8090"),
            ("sec-fetch-site", "same-site"),
        ]);
        assert_eq!(
            same_origin(&post, &sibling, true, &[]),
            Err(CrossSite::FetchSite)
        );
        let cross = headers(&[own[0], ("sec-fetch-site", "cross-site")]);
        assert_eq!(
            same_origin(&post, &cross, false, &[]),
            Err(CrossSite::FetchSite)
        );
        // A cookie alone proves nothing; a bearer token cannot be sent cross-site.
        let bare = headers(&[own[0]]);
        assert_eq!(
            same_origin(&post, &bare, true, &[]),
            Err(CrossSite::Unverifiable)
        );
        assert_eq!(same_origin(&post, &bare, false, &[]), Ok(()));
        assert_eq!(same_origin(&Method::GET, &evil, true, &[]), Ok(()));
    }
}
