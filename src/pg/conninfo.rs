//! libpq's connection settings from text: a `postgres://` URL ([`parse_url`]) and the `PG*`
//! environment variables ([`parse_env`]), read into a [`ConnInfo`] and applied to
//! [`ConnectParams`]. Pure functions: no I/O, no process environment.
//!
//! What libpq does, this does, with three differences, each an error rather than a surprise:
//! Unix-domain sockets (an empty host, or one starting with `/`) are not supported, neither are
//! the libpq parameters the client has no use for (`options`, `hostaddr`, `sslmode=allow`,
//! ...), and a URL must name its user (libpq would take the operating-system user).
//!
//! No error message ever contains the password, or any part of the URL that could be one: a
//! malformed URL is described, never echoed.

use crate::ascii::hex_digit;
use std::path::PathBuf;
use std::time::Duration;

use super::{AuthMethod, ChannelBinding, ConnectParams, RootCert, SslMode, TargetSessionAttrs};

/// PostgreSQL's port, for a host given without one.
pub const DEFAULT_PORT: u16 = 5432;

/// One libpq parameter this client implements (all but `host` and `port`, which a URL gives
/// as lists, and `ssl`, an alias): its keyword, the `PG*` variable libpq reads it from, and
/// how it is parsed into, merged into and shown from its [`ConnInfo`] field. URL parsing,
/// [`parse_env`], [`ConnInfo::or`], [`ConnInfo::sets`], `Debug` and [`PG_ENV_VARIABLES`] all
/// work from [`PARAMETERS`]; [`ConnInfo::apply_to`] and [`ConnInfo::check`] say what each
/// one means.
struct Parameter {
    /// libpq's keyword: the URL's query key, and the name of the [`ConnInfo`] field.
    keyword: &'static str,
    /// The `PG*` environment variable that stands for it, if this service honours one.
    variable: Option<&'static str>,
    /// Parses a value (percent-decoded, or a variable's, trimmed) into the field.
    set: fn(&mut ConnInfo, &str) -> Result<(), String>,
    /// Whether the field is given.
    is_set: fn(&ConnInfo) -> bool,
    /// Moves the fallback's value into the field if the field is not given.
    fill: fn(&mut ConnInfo, &mut ConnInfo),
    /// What `Debug` shows of the field.
    show: fn(&ConnInfo) -> &dyn std::fmt::Debug,
}

/// A row of [`PARAMETERS`] for field `$field` (libpq's keyword), read from `$variable`: `$parse`
/// turns a value into the field's (`Err` with the problem), `$wrap` (by default `Some`) into
/// the field's `Option`, and `Debug` shows `$show` (by default the field).
macro_rules! parameter {
    ($field:ident, $variable:expr, $parse:expr) => {
        parameter!($field, $variable, $parse, Some)
    };
    ($field:ident, $variable:expr, $parse:expr, $wrap:expr) => {
        parameter!($field, $variable, $parse, $wrap, |info| &info.$field)
    };
    ($field:ident, $variable:expr, $parse:expr, $wrap:expr, $show:expr) => {
        Parameter {
            keyword: stringify!($field),
            variable: $variable,
            set: |info, value| {
                info.$field = $wrap($parse(value)?);
                Ok(())
            },
            is_set: |info| info.$field.is_some(),
            fill: |info, fallback| {
                if info.$field.is_none() {
                    info.$field = fallback.$field.take();
                }
            },
            show: $show,
        }
    };
}

/// Every parameter but `host` and `port`, in the order of [`ConnInfo`]'s fields (the order
/// error messages list them in). A new one: its field, its row here, and what it sets in
/// [`ConnInfo::apply_to`] (and, for a variable, its row in `config::VARIABLES`, which a test
/// there checks).
const PARAMETERS: &[Parameter] = &[
    // An empty user, password or database name is not given, as in libpq.
    parameter!(user, None, text, non_empty),
    parameter!(password, None, text, non_empty, |info| {
        if info.password.is_some() {
            &Some("<redacted>")
        } else {
            &None::<&str>
        }
    }),
    parameter!(dbname, None, text, non_empty),
    parameter!(sslmode, Some("PGSSLMODE"), parse_sslmode),
    parameter!(sslrootcert, Some("PGSSLROOTCERT"), parse_root_cert),
    parameter!(sslcert, Some("PGSSLCERT"), parse_path),
    parameter!(sslkey, Some("PGSSLKEY"), parse_path),
    parameter!(
        channel_binding,
        Some("PGCHANNELBINDING"),
        parse_channel_binding
    ),
    parameter!(require_auth, Some("PGREQUIREAUTH"), parse_require_auth),
    parameter!(
        target_session_attrs,
        Some("PGTARGETSESSIONATTRS"),
        parse_target_session_attrs
    ),
    parameter!(application_name, Some("PGAPPNAME"), text),
    parameter!(fallback_application_name, None, text),
    parameter!(connect_timeout, None, parse_connect_timeout),
];

/// The row of `keyword`.
fn parameter(keyword: &str) -> Option<&'static Parameter> {
    PARAMETERS.iter().find(|p| p.keyword == keyword)
}

/// The `PG*` environment variables honoured, and the URL parameter each stands for (an explicit
/// URL parameter wins over its variable, as in libpq): the rows of `PARAMETERS` that name one.
pub const PG_ENV_VARIABLES: &[(&str, &str)] = &ENV_VARIABLES;

const ENV_VARIABLES: [(&str, &str); count_variables()] = variables();

const fn count_variables() -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < PARAMETERS.len() {
        if PARAMETERS[i].variable.is_some() {
            count += 1;
        }
        i += 1;
    }
    count
}

const fn variables<const N: usize>() -> [(&'static str, &'static str); N] {
    let mut out = [("", ""); N];
    let (mut i, mut n) = (0, 0);
    while i < PARAMETERS.len() {
        if let Some(variable) = PARAMETERS[i].variable {
            out[n] = (variable, PARAMETERS[i].keyword);
            n += 1;
        }
        i += 1;
    }
    out
}

/// libpq parameters this client does not implement: named as such rather than as unknown.
const UNSUPPORTED: &[&str] = &[
    "hostaddr",
    "options",
    "passfile",
    "require_auth_oauth",
    "client_encoding",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "krbsrvname",
    "sslnegotiation",
    "sslcompression",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requirepeer",
    "service",
    "load_balance_hosts",
    "min_protocol_version",
    "max_protocol_version",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
];

/// The parameters a URL may carry, for error messages.
fn supported() -> String {
    let mut list = String::from("host, port");
    for p in PARAMETERS {
        list.push_str(", ");
        list.push_str(p.keyword);
    }
    list
}

/// Connection settings as given: `None` (or no hosts) where the source says nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// Hosts in the order to try them, each with its port.
    pub hosts: Vec<(String, u16)>,
    pub user: Option<String>,
    /// Never printed: `Debug` shows whether one is set, not what it is.
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<RootCert>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub channel_binding: Option<ChannelBinding>,
    pub require_auth: Option<Vec<AuthMethod>>,
    pub target_session_attrs: Option<TargetSessionAttrs>,
    pub application_name: Option<String>,
    /// Used when neither `application_name` nor `PGAPPNAME` is given.
    pub fallback_application_name: Option<String>,
    pub connect_timeout: Option<Duration>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("ConnInfo");
        s.field("hosts", &self.hosts);
        for p in PARAMETERS {
            s.field(p.keyword, (p.show)(self));
        }
        s.finish()
    }
}

/// Parses a libpq connection URL:
/// `postgres[ql]://USER[:PASSWORD]@HOST[:PORT][,HOST[:PORT]...][/DATABASE][?KEY=VALUE&...]`.
///
/// As libpq: user, password, hosts, ports, database and every query key and value are
/// percent-decoded (`%40` is `@`; `+` stays `+`); an IPv6 address is written in brackets
/// (`[::1]:5432`); each host has its own port, 5432 where none is given; a `host` or `port`
/// query parameter replaces the list in the authority (a single port then applies to every
/// host); the database defaults to the user name; `ssl=true` means `sslmode=require`; a
/// repeated parameter takes its last value. Unlike libpq, the user must be given (here or as
/// `?user=`), a host is required (no Unix-domain sockets), and a parameter this client does not
/// implement is an error.
///
/// The error describes what is wrong without quoting the URL.
pub fn parse_url(url: &str) -> Result<ConnInfo, String> {
    let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    else {
        return Err(if !url.contains("://") && url.contains('=') {
            "is a key=value connection string, not a URL: write \
             postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                .to_string()
        } else {
            "must start with postgres:// or postgresql:// \
             (postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
                .to_string()
        });
    };

    // libpq: the user information ends at the first '@', if one comes before any '/'. Before
    // any '?' too, here: an '@' in the query (an unencoded one in a password parameter) is not
    // the end of a user name, and is refused below instead of splitting the password.
    let (userinfo, rest) = match rest.find(['@', '/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'@' => (Some(&rest[..i]), &rest[i + 1..]),
        _ => (None, rest),
    };
    // A stray '@' means a user name or password with an unencoded '@' or '/': libpq would
    // split it somewhere inside the password and put the pieces in the host or the database
    // name (and so in later error messages). Refuse instead, quoting nothing.
    let encode_hint = "percent-encode '@', '/', ':' and other special characters of the user \
                       name and password (%40 for @, %2F for /, %3A for :)";
    match userinfo {
        None if url.contains('@') => {
            return Err(format!(
                "has an '@' after a '/' or '?' (or no user name before its '@'): {encode_hint}"
            ))
        }
        Some(_) if rest[..rest.find('?').unwrap_or(rest.len())].contains('@') => {
            return Err(format!(
                "has more than one '@' before its host: {encode_hint}"
            ))
        }
        _ => {}
    }

    let mut info = ConnInfo::default();
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        info.user = non_empty(decode(user, "the user name")?);
        if let Some(p) = password {
            info.password = non_empty(decode(p, "the password")?);
        }
    }

    // The authority: HOST[:PORT] pairs separated by commas, each HOST possibly [IPv6].
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    let mut p = rest;
    let end_of_netloc = loop {
        let (host, after) = if let Some(r) = p.strip_prefix('[') {
            let close = r
                .find(']')
                .ok_or("has an IPv6 address with no closing ']'")?;
            if close == 0 {
                return Err("has an empty IPv6 address ([])".into());
            }
            let after = &r[close + 1..];
            if !after.is_empty() && !after.starts_with([':', '/', '?', ',']) {
                return Err(format!(
                    "has something other than ':', '/', '?' or ',' after the IPv6 address [{}]",
                    &r[..close]
                ));
            }
            (&r[..close], after)
        } else {
            let end = p.find([':', '/', '?', ',']).unwrap_or(p.len());
            (&p[..end], &p[end..])
        };
        hosts.push(decode(host, "a host name")?);
        let mut after = after;
        let mut port = "";
        if let Some(r) = after.strip_prefix(':') {
            let end = r.find(['/', '?', ',']).unwrap_or(r.len());
            port = &r[..end];
            after = &r[end..];
        }
        ports.push(decode(port, "a port")?);
        match after.strip_prefix(',') {
            Some(next) => p = next,
            None => break after,
        }
    };

    let mut query = None;
    if let Some(r) = end_of_netloc.strip_prefix('/') {
        let (db, q) = match r.split_once('?') {
            Some((db, q)) => (db, Some(q)),
            None => (r, None),
        };
        info.dbname = non_empty(decode(db, "the database name")?);
        query = q;
    } else if let Some(q) = end_of_netloc.strip_prefix('?') {
        query = Some(q);
    }

    if let Some(query) = query {
        let pairs: Vec<&str> = query.split('&').collect();
        let count = pairs.len();
        // A password in the query: with an unencoded '&' in it, any later key or value can be
        // a piece of it, so none is quoted back in an error.
        let secret = pairs.iter().any(|p| p.starts_with("password="));
        for (i, pair) in pairs.into_iter().enumerate() {
            if pair.is_empty() && i + 1 == count {
                continue; // a trailing '&', as libpq
            }
            let Some((key, value)) = pair.split_once('=') else {
                return Err(format!(
                    "query parameter {} has no '=' (write key=value, separated by '&')",
                    i + 1
                ));
            };
            let key = decode(key, &format!("the name of query parameter {}", i + 1))?;
            let shown = if is_known(&key) && (!secret || key == "password") {
                format!("parameter {key}")
            } else {
                format!("query parameter {}", i + 1)
            };
            if value.contains('=') {
                return Err(format!(
                    "{shown} has a second '=': percent-encode '=' in a value as %3D"
                ));
            }
            let value = decode(value, &shown)?;
            match key.as_str() {
                "host" => hosts = value.split(',').map(str::to_string).collect(),
                "port" => ports = value.split(',').map(str::to_string).collect(),
                "ssl" if value == "true" => info.sslmode = Some(SslMode::Require),
                "ssl" => {
                    return Err(
                        "parameter ssl: only ssl=true (the same as sslmode=require) is understood"
                            .into(),
                    )
                }
                // Neither an unknown key nor a bad value is quoted: with an unencoded '&' in a
                // password, either can be a piece of it.
                _ => info.set(&key, &value).map_err(|problem| {
                    if secret {
                        let problem = problem.replace(&format!("{value:?}"), "its value");
                        format!("{shown}: {problem}")
                    } else {
                        format!("parameter {key}: {problem}")
                    }
                })?,
            }
        }
    }

    info.hosts = pair_hosts(hosts, ports)?;
    if info.user.is_none() {
        return Err("names no user: write postgres://USER:PASSWORD@HOST/DATABASE".into());
    }
    if info.dbname.is_none() {
        info.dbname = info.user.clone(); // libpq's default
    }
    Ok(info)
}

/// Reads the `PG*` variables of [`PG_ENV_VARIABLES`] through `get`, as libpq does; an empty value
/// counts as unset. The error names the variable.
pub fn parse_env(
    get: impl Fn(&'static str) -> Option<String>,
) -> Result<ConnInfo, (&'static str, String)> {
    let mut info = ConnInfo::default();
    for p in PARAMETERS {
        let Some(variable) = p.variable else { continue };
        let Some(value) = get(variable) else { continue };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        (p.set)(&mut info, value).map_err(|problem| (variable, problem))?;
    }
    Ok(info)
}

/// The `PG*` variable that stands for URL parameter `param`, if any.
pub fn env_variable_for(param: &str) -> Option<&'static str> {
    parameter(param).and_then(|p| p.variable)
}

impl ConnInfo {
    /// Each setting from `self` where it has one, else from `fallback` (URL over environment).
    pub fn or(mut self, mut fallback: ConnInfo) -> ConnInfo {
        if self.hosts.is_empty() {
            self.hosts = std::mem::take(&mut fallback.hosts);
        }
        for p in PARAMETERS {
            (p.fill)(&mut self, &mut fallback);
        }
        self
    }

    /// Whether parameter `param` (libpq's name) is given.
    pub fn sets(&self, param: &str) -> bool {
        match param {
            "host" | "port" => !self.hosts.is_empty(),
            _ => parameter(param).is_some_and(|p| (p.is_set)(self)),
        }
    }

    /// Settings that cannot work together: the parameter to blame (one that is set) and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let (Some(RootCert::System), Some(mode)) = (&self.sslrootcert, self.sslmode) {
            if mode != SslMode::VerifyFull {
                return Err((
                    "sslmode",
                    format!(
                        "weak sslmode {:?} may not be used with sslrootcert=system (use \
                         verify-full: any public CA can vouch for some other host, as in libpq)",
                        sslmode_name(mode)
                    ),
                ));
            }
        }
        match (&self.sslcert, &self.sslkey) {
            (Some(_), None) => {
                return Err((
                    "sslcert",
                    "sslcert is given without sslkey (a client certificate needs its key)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "sslkey",
                    "sslkey is given without sslcert (a key needs its client certificate)".into(),
                ))
            }
            _ => {}
        }
        if self.channel_binding == Some(ChannelBinding::Require) {
            if self.sslmode == Some(SslMode::Disable) {
                return Err((
                    "channel_binding",
                    "channel_binding=require needs TLS, but sslmode is disable".into(),
                ));
            }
            if let Some(methods) = &self.require_auth {
                if !methods.contains(&AuthMethod::ScramSha256) {
                    return Err((
                        "channel_binding",
                        "channel_binding=require needs scram-sha-256, which require_auth does \
                         not allow"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Overwrites in `p` every setting given here, with libpq's implied defaults:
    /// `sslrootcert=system` without `sslmode` means `verify-full`, and `application_name` falls
    /// back to `fallback_application_name`. Call [`ConnInfo::check`] first.
    pub fn apply_to(&self, p: &mut ConnectParams) {
        if let Some(((host, port), more)) = self.hosts.split_first() {
            p.host.clone_from(host);
            p.port = *port;
            p.more_hosts = more.to_vec();
        }
        if let Some(user) = &self.user {
            p.user.clone_from(user);
        }
        if self.password.is_some() {
            p.password.clone_from(&self.password);
        }
        if let Some(dbname) = &self.dbname {
            p.dbname.clone_from(dbname);
        }
        if let Some(mode) = self.sslmode {
            p.tls.mode = mode;
        } else if self.sslrootcert == Some(RootCert::System) {
            p.tls.mode = SslMode::VerifyFull;
        }
        if self.sslrootcert.is_some() {
            p.tls.root_cert.clone_from(&self.sslrootcert);
        }
        if self.sslcert.is_some() {
            p.tls.cert.clone_from(&self.sslcert);
        }
        if self.sslkey.is_some() {
            p.tls.key.clone_from(&self.sslkey);
        }
        if let Some(cb) = self.channel_binding {
            p.channel_binding = cb;
        }
        if self.require_auth.is_some() {
            p.require_auth.clone_from(&self.require_auth);
        }
        if let Some(t) = self.target_session_attrs {
            p.target_session_attrs = t;
        }
        if let Some(name) = self
            .application_name
            .as_ref()
            .or(self.fallback_application_name.as_ref())
        {
            p.application_name.clone_from(name);
        }
        if let Some(t) = self.connect_timeout {
            p.connect_timeout = t;
        }
    }

    /// Sets parameter `param` (any but `host`, `port` and `ssl`, which only a URL has).
    fn set(&mut self, param: &str, value: &str) -> Result<(), String> {
        match parameter(param) {
            Some(p) => (p.set)(self, value),
            None if UNSUPPORTED.contains(&param) => Err(format!(
                "is a libpq parameter this service does not support (supported: {})",
                supported()
            )),
            None => Err(format!(
                "is not a connection parameter (supported: {})",
                supported()
            )),
        }
    }
}

fn is_known(key: &str) -> bool {
    matches!(key, "ssl" | "host" | "port") || parameter(key).is_some() || UNSUPPORTED.contains(&key)
}

fn sslmode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

fn parse_sslmode(v: &str) -> Result<SslMode, String> {
    Ok(match v {
        "disable" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        "allow" => {
            return Err(
                "\"allow\" (plain first, TLS only if the server insists) is not \
                        supported: use prefer, or require"
                    .into(),
            )
        }
        other => {
            return Err(format!(
                "{other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ))
        }
    })
}

fn parse_root_cert(v: &str) -> Result<RootCert, String> {
    match v {
        "" => Err("is empty (a PEM file of CA certificates, or system)".into()),
        "system" => Ok(RootCert::System),
        path => Ok(RootCert::File(PathBuf::from(path))),
    }
}

fn parse_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        Err("is empty (a path to a PEM file)".into())
    } else {
        Ok(PathBuf::from(v))
    }
}

fn parse_channel_binding(v: &str) -> Result<ChannelBinding, String> {
    match v {
        "disable" => Ok(ChannelBinding::Disable),
        "prefer" => Ok(ChannelBinding::Prefer),
        "require" => Ok(ChannelBinding::Require),
        other => Err(format!("{other:?} is not one of disable, prefer, require")),
    }
}

fn parse_target_session_attrs(v: &str) -> Result<TargetSessionAttrs, String> {
    match v {
        "any" => Ok(TargetSessionAttrs::Any),
        "read-write" => Ok(TargetSessionAttrs::ReadWrite),
        "prefer-standby" => Ok(TargetSessionAttrs::PreferStandby),
        "read-only" | "primary" | "standby" => Err(format!(
            "{v:?} is not supported by this service (any, read-write or prefer-standby)"
        )),
        other => Err(format!(
            "{other:?} is not one of any, read-write, prefer-standby"
        )),
    }
}

/// libpq's `require_auth`: a comma-separated list of methods the server may ask for, or of
/// `!method`s it may not (not both).
fn parse_require_auth(v: &str) -> Result<Vec<AuthMethod>, String> {
    const ALL: [AuthMethod; 4] = [
        AuthMethod::None,
        AuthMethod::Password,
        AuthMethod::Md5,
        AuthMethod::ScramSha256,
    ];
    let mut named = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut negated = None;
    for item in v.split(',').map(str::trim) {
        let (neg, name) = match item.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, item),
        };
        match negated {
            None => negated = Some(neg),
            Some(n) if n != neg => {
                return Err(format!(
                    "{item:?}: methods and !methods cannot be mixed (list either the methods \
                     allowed, or the !methods refused)"
                ))
            }
            _ => {}
        }
        if seen.contains(&name) {
            return Err(format!("method {name:?} is given more than once"));
        }
        seen.push(name);
        let method = match name {
            "none" => AuthMethod::None,
            "password" => AuthMethod::Password,
            "md5" => AuthMethod::Md5,
            "scram-sha-256" => AuthMethod::ScramSha256,
            "gss" | "sspi" | "oauth" if neg => continue, // never used here anyway
            "gss" | "sspi" | "oauth" => {
                return Err(format!("method {name:?} is not supported by this service"))
            }
            "" => return Err("has an empty method".into()),
            other => {
                return Err(format!(
                    "{other:?} is not one of password, md5, scram-sha-256, none (each may be \
                     negated with !)"
                ))
            }
        };
        named.push(method);
    }
    if negated == Some(true) {
        // A negated list never allows a cleartext or MD5 password to an unverified server
        // (libpq's `!none` would): "anything but X" is not a decision to send the password
        // readable. Name `password` or `md5` positively for that.
        let allowed: Vec<AuthMethod> = ALL
            .into_iter()
            .filter(|m| !named.contains(m))
            .filter(|m| !matches!(m, AuthMethod::Password | AuthMethod::Md5))
            .collect();
        if allowed.is_empty() {
            return Err(
                "refuses every method this service allows by negation (name password \
                        or md5 positively to allow them)"
                    .into(),
            );
        }
        return Ok(allowed);
    }
    Ok(named)
}

/// libpq's `connect_timeout`: whole seconds, 1 counting as 2 (libpq's minimum). libpq's "0 or
/// less waits forever" is refused: a connection attempt here is always bounded.
fn parse_connect_timeout(v: &str) -> Result<Duration, String> {
    let secs: i64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a whole number of seconds"))?;
    match secs {
        ..=0 => Err(format!(
            "{secs} (wait forever) is not supported: give whole seconds, at least 1"
        )),
        1 => Ok(Duration::from_secs(2)),
        2..=86_400 => Ok(Duration::from_secs(secs as u64)),
        _ => Err(format!("{secs} is out of range (1 to 86400 seconds)")),
    }
}

/// libpq's pairing of host and port lists: one port for every host, or one per host (an
/// empty one meaning 5432). Refuses what would be a Unix-domain socket.
fn pair_hosts(hosts: Vec<String>, ports: Vec<String>) -> Result<Vec<(String, u16)>, String> {
    let sockets = "Unix-domain sockets are not supported: give a host name or address";
    if hosts.len() == 1 && hosts[0].is_empty() {
        return Err(format!(
            "names no host (postgres://USER:PASSWORD@HOST:PORT/DATABASE); {sockets}"
        ));
    }
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(format!(
            "gives {} ports for {} hosts (give one port for all, or one per host)",
            ports.len(),
            hosts.len()
        ));
    }
    let mut out = Vec::with_capacity(hosts.len());
    for (i, host) in hosts.into_iter().enumerate() {
        let host = host.trim().to_string();
        if host.is_empty() {
            return Err(format!("host {} of the list is empty; {sockets}", i + 1));
        }
        if host.starts_with('/') || host.starts_with('@') {
            return Err(format!("host {host:?} is a socket directory; {sockets}"));
        }
        let port = ports[if ports.len() == 1 { 0 } else { i }].trim();
        let port = if port.is_empty() {
            DEFAULT_PORT
        } else {
            // The value is not quoted: in a malformed URL it may be a piece of the password.
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    format!("the port of host {host:?} is not a number from 1 to 65535")
                })?
        };
        out.push((host, port));
    }
    Ok(out)
}

/// A value taken as it is.
fn text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// libpq's percent-decoding: `%XX` is the byte XX, `%00` is refused, `+` is itself. The
/// result must be UTF-8. `what` names the part in the error; the value is never quoted.
fn decode(s: &str, what: &str) -> Result<String, String> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let byte = match (b.get(i + 1), b.get(i + 2)) {
            (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                (hex_digit(h).unwrap_or(0) << 4) | hex_digit(l).unwrap_or(0)
            }
            _ => {
                return Err(format!(
                    "{what} has a '%' not followed by two hex digits (write %25 for a '%')"
                ))
            }
        };
        if byte == 0 {
            return Err(format!("{what} contains %00, which is not allowed"));
        }
        out.push(byte);
        i += 3;
    }
    String::from_utf8(out).map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> ConnInfo {
        parse_url(u).unwrap_or_else(|e| panic!("{u}: {e}"))
    }

    fn url_err(u: &str) -> String {
        match parse_url(u) {
            Ok(info) => panic!("{u} parsed: {info:?}"),
            Err(e) => e,
        }
    }

    fn hosts(list: &[(&str, u16)]) -> Vec<(String, u16)> {
        list.iter().map(|(h, p)| (h.to_string(), *p)).collect()
    }

    #[test]
    fn a_plain_url() {
        let i = url("postgres://alice:s3cret@db.example.com:6543/records");
        assert_eq!(i.hosts, hosts(&[("db.example.com", 6543)]));
        assert_eq!(i.user.as_deref(), Some("alice"));
        assert_eq!(i.password.as_deref(), Some("s3cret"));
        assert_eq!(i.dbname.as_deref(), Some("records"));
        assert_eq!(i.sslmode, None);
        assert_eq!(i.application_name, None);
        let same = url("postgresql://alice:s3cret@db.example.com:6543/records");
        assert_eq!(i, same);
    }

    #[test]
    fn defaults_port_and_database_as_libpq() {
        let i = url("postgres://bob@db");
        assert_eq!(i.hosts, hosts(&[("db", 5432)]));
        assert_eq!(i.password, None);
        assert_eq!(i.dbname.as_deref(), Some("bob"), "the user name");
        assert_eq!(url("postgres://bob@db/").dbname.as_deref(), Some("bob"));
        assert_eq!(url("postgres://bob@db:/x").hosts, hosts(&[("db", 5432)]));
        assert_eq!(url("postgres://bob:@db/x").password, None, "empty is none");
        assert_eq!(
            url("postgres://bob@db?sslmode=require").dbname.as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn percent_decoding() {
        let i = url("postgres://us%65r%3Aname:p%40ss%2Fw%3Ard%25+x%3D@db/my%20db?application_name=a%26b%3Dc");
        assert_eq!(i.user.as_deref(), Some("user:name"));
        assert_eq!(
            i.password.as_deref(),
            Some("p@ss/w:rd%+x="),
            "+ is not a space"
        );
        assert_eq!(i.dbname.as_deref(), Some("my db"));
        assert_eq!(i.application_name.as_deref(), Some("a&b=c"));
        // A raw ':' in the password is fine (only the first separates the user).
        assert_eq!(url("postgres://u:a:b@h/d").password.as_deref(), Some("a:b"));
        // UTF-8, encoded and not.
        assert_eq!(
            url("postgres://u:%C3%A9t%C3%A9@h/d").password.as_deref(),
            Some("été")
        );
        assert_eq!(url("postgres://u:été@h/d").password.as_deref(), Some("été"));
        // Query keys are decoded too.
        assert_eq!(
            url("postgres://u@h/d?ssl%6Dode=disable").sslmode,
            Some(SslMode::Disable)
        );
        // A raw '?' in the password is refused (libpq would take it; but then an unencoded '@'
        // in a query password would split it into host and user): it is written %3F.
        assert!(url_err("postgres://u:a?b@h/d").contains("percent-encode"));
        assert_eq!(
            url("postgres://u:a%3Fb@h/d").password.as_deref(),
            Some("a?b")
        );
    }

    #[test]
    fn bad_percent_encodings_name_the_part_without_quoting_it() {
        for (u, part) in [
            ("postgres://u:hunter2%zz@h/d", "the password"),
            ("postgres://u:hunter2%4@h/d", "the password"),
            ("postgres://u:hunter2%@h/d", "the password"),
            ("postgres://u%g1:x@h/d", "the user name"),
            ("postgres://u@h/d%", "the database name"),
            ("postgres://u@h%2/d", "a host name"),
            ("postgres://u@h/d?sslmode=%xx", "parameter sslmode"),
            ("postgres://u@h/d?password=hunter2%x", "parameter password"),
        ] {
            let e = url_err(u);
            assert!(e.starts_with(part), "{u}: {e}");
            assert!(e.contains("two hex digits"), "{u}: {e}");
            assert!(!e.contains("hunter2"), "{u}: {e}");
        }
        let e = url_err("postgres://u:hunter2%00@h/d");
        assert_eq!(e, "the password contains %00, which is not allowed");
        let e = url_err("postgres://u:hunter2%FF@h/d");
        assert_eq!(e, "the password is not UTF-8 once percent-decoded");
    }

    #[test]
    fn ipv6_hosts_in_brackets() {
        assert_eq!(
            url("postgres://u@[::1]:5433/d").hosts,
            hosts(&[("::1", 5433)])
        );
        assert_eq!(url("postgres://u@[::1]/d").hosts, hosts(&[("::1", 5432)]));
        assert_eq!(
            url("postgres://u@[2001:db8::7]").hosts,
            hosts(&[("2001:db8::7", 5432)])
        );
        assert_eq!(
            url("postgres://u@[fe80::1%25eth0]:1/d").hosts,
            hosts(&[("fe80::1%eth0", 1)])
        );
        assert_eq!(
            url("postgres://u@[::1]:5433,[::2],h:7/d").hosts,
            hosts(&[("::1", 5433), ("::2", 5432), ("h", 7)])
        );
        assert_eq!(
            url("postgres://u@[::1]?sslmode=disable").hosts,
            hosts(&[("::1", 5432)])
        );
        assert!(url_err("postgres://u@[::1/d").contains("no closing ']'"));
        assert!(url_err("postgres://u@[]:5432/d").contains("empty IPv6"));
        assert!(url_err("postgres://u@[::1]x/d").contains("after the IPv6 address [::1]"));
    }

    #[test]
    fn several_hosts_each_with_its_own_port() {
        assert_eq!(
            url("postgres://u@h1:5432,h2:5433/d").hosts,
            hosts(&[("h1", 5432), ("h2", 5433)])
        );
        assert_eq!(
            url("postgres://u@h1,h2:5433,h3/d").hosts,
            hosts(&[("h1", 5432), ("h2", 5433), ("h3", 5432)])
        );
        assert_eq!(
            url("postgres://u@h1:1,h2:2").hosts,
            hosts(&[("h1", 1), ("h2", 2)])
        );
        assert!(url_err("postgres://u@h1,,h2/d").contains("host 2 of the list is empty"));
        assert!(url_err("postgres://u@h1,/d").contains("Unix-domain sockets"));
    }

    #[test]
    fn host_and_port_parameters_replace_the_authority_as_libpq() {
        let i = url("postgres://u@ignored:1/d?host=a,b&port=7");
        assert_eq!(i.hosts, hosts(&[("a", 7), ("b", 7)]), "one port for all");
        let i = url("postgres://u@/d?host=a,b&port=7,8");
        assert_eq!(i.hosts, hosts(&[("a", 7), ("b", 8)]));
        let i = url("postgres://u@/d?host=a,b&port=,8");
        assert_eq!(i.hosts, hosts(&[("a", 5432), ("b", 8)]));
        let i = url("postgres://u@h1:1,h2:2/d?port=9");
        assert_eq!(i.hosts, hosts(&[("h1", 9), ("h2", 9)]));
        let e = url_err("postgres://u@/d?host=a,b,c&port=1,2");
        assert!(e.contains("gives 2 ports for 3 hosts"), "{e}");
    }

    #[test]
    fn user_password_and_dbname_parameters_override() {
        let i = url("postgres://a:x@h/d?user=b&password=p%40ss&dbname=e");
        assert_eq!(i.user.as_deref(), Some("b"));
        assert_eq!(i.password.as_deref(), Some("p@ss"));
        assert_eq!(i.dbname.as_deref(), Some("e"));
        let i = url("postgres://h/?user=carol");
        assert_eq!(i.user.as_deref(), Some("carol"));
        assert_eq!(i.dbname.as_deref(), Some("carol"));
        assert_eq!(i.password, None);
        // A repeated parameter: the last wins, as libpq.
        let i = url("postgres://u@h/d?sslmode=disable&sslmode=verify-ca");
        assert_eq!(i.sslmode, Some(SslMode::VerifyCa));
    }

    #[test]
    fn sslmode() {
        for (v, m) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(
                url(&format!("postgres://u@h/d?sslmode={v}")).sslmode,
                Some(m)
            );
        }
        assert_eq!(
            url("postgres://u@h/d?ssl=true").sslmode,
            Some(SslMode::Require)
        );
        let e = url_err("postgres://u@h/d?sslmode=allow");
        assert!(e.starts_with("parameter sslmode: \"allow\""), "{e}");
        assert!(e.contains("not supported"), "{e}");
        let e = url_err("postgres://u@h/d?sslmode=Require");
        assert_eq!(
            e,
            "parameter sslmode: \"Require\" is not one of disable, prefer, require, verify-ca, verify-full"
        );
        assert!(url_err("postgres://u@h/d?ssl=false").contains("only ssl=true"));
    }

    #[test]
    fn certificates() {
        let i = url("postgres://u@h/d?sslrootcert=%2Fetc%2Fca.pem&sslcert=c.pem&sslkey=k.pem");
        assert_eq!(i.sslrootcert, Some(RootCert::File("/etc/ca.pem".into())));
        assert_eq!(i.sslcert, Some(PathBuf::from("c.pem")));
        assert_eq!(i.sslkey, Some(PathBuf::from("k.pem")));
        let i = url("postgres://u@h/d?sslrootcert=system");
        assert_eq!(i.sslrootcert, Some(RootCert::System));
        assert!(url_err("postgres://u@h/d?sslrootcert=").contains("is empty"));
        assert!(url_err("postgres://u@h/d?sslkey=").contains("is empty"));
    }

    #[test]
    fn channel_binding_and_target_session_attrs() {
        for (v, c) in [
            ("disable", ChannelBinding::Disable),
            ("prefer", ChannelBinding::Prefer),
            ("require", ChannelBinding::Require),
        ] {
            let i = url(&format!("postgres://u@h/d?channel_binding={v}"));
            assert_eq!(i.channel_binding, Some(c));
        }
        assert!(url_err("postgres://u@h/d?channel_binding=yes").contains("not one of"));
        let i = url("postgres://u@h1,h2/d?target_session_attrs=read-write");
        assert_eq!(i.target_session_attrs, Some(TargetSessionAttrs::ReadWrite));
        let i = url("postgres://u@h1/d?target_session_attrs=any");
        assert_eq!(i.target_session_attrs, Some(TargetSessionAttrs::Any));
        let e = url_err("postgres://u@h/d?target_session_attrs=standby");
        assert!(e.contains("not supported"), "{e}");
        let e = url_err("postgres://u@h/d?target_session_attrs=rw");
        assert!(e.contains("not one of any, read-write"), "{e}");
    }

    #[test]
    fn require_auth() {
        use AuthMethod::*;
        let ra = |v: &str| url(&format!("postgres://u@h/d?require_auth={v}")).require_auth;
        assert_eq!(ra("scram-sha-256"), Some(vec![ScramSha256]));
        assert_eq!(ra("password,md5,none"), Some(vec![Password, Md5, None]));
        assert_eq!(ra("scram-sha-256, none"), Some(vec![ScramSha256, None]));
        assert_eq!(ra("!password,!md5"), Some(vec![None, ScramSha256]));
        // Negation never lets a cleartext or MD5 password go to an unverified server.
        assert_eq!(ra("!none"), Some(vec![ScramSha256]));
        assert_eq!(ra("!gss"), Some(vec![None, ScramSha256]));
        let e = |v: &str| url_err(&format!("postgres://u@h/d?require_auth={v}"));
        assert!(e("md5,!password").contains("cannot be mixed"));
        assert!(e("md5,md5").contains("more than once"));
        assert!(e("gss").contains("not supported"));
        assert!(e("kerberos").contains("not one of"));
        assert!(e("md5,").contains("empty method"));
        assert!(e("!none,!password,!md5,!scram-sha-256").contains("refuses every method"));
        assert!(e("!none,!scram-sha-256").contains("name password or md5 positively"));
    }

    #[test]
    fn application_name_and_connect_timeout() {
        let i = url("postgres://u@h/d?application_name=my%20app&fallback_application_name=f");
        assert_eq!(i.application_name.as_deref(), Some("my app"));
        assert_eq!(i.fallback_application_name.as_deref(), Some("f"));
        let t = |v: &str| url(&format!("postgres://u@h/d?connect_timeout={v}")).connect_timeout;
        assert_eq!(t("10"), Some(Duration::from_secs(10)));
        assert_eq!(t("1"), Some(Duration::from_secs(2)), "libpq's minimum");
        assert_eq!(t("%2030"), Some(Duration::from_secs(30)));
        let e = |v: &str| url_err(&format!("postgres://u@h/d?connect_timeout={v}"));
        assert!(e("0").contains("wait forever"));
        assert!(e("-5").contains("wait forever"));
        assert!(e("5s").contains("not a whole number of seconds"));
        assert!(e("86401").contains("out of range"));
    }

    #[test]
    fn unknown_and_unsupported_parameters_are_named() {
        let e = url_err("postgres://u@h/d?sslmod=require");
        assert!(
            e.starts_with("parameter sslmod: is not a connection parameter"),
            "{e}"
        );
        assert!(e.contains("supported: host, port"), "{e}");
        let e = url_err("postgres://u@h/d?options=-c%20x%3Dy");
        assert!(
            e.starts_with("parameter options: is a libpq parameter this service does not support"),
            "{e}"
        );
        assert!(url_err("postgres://u@h/d?hostaddr=1.2.3.4").contains("does not support"));
    }

    #[test]
    fn malformed_query_strings() {
        assert_eq!(url("postgres://u@h/d?").hosts, hosts(&[("h", 5432)]));
        assert_eq!(
            url("postgres://u@h/d?sslmode=disable&").sslmode,
            Some(SslMode::Disable)
        );
        let e = url_err("postgres://u@h/d?sslmode");
        assert_eq!(
            e,
            "query parameter 1 has no '=' (write key=value, separated by '&')"
        );
        let e = url_err("postgres://u@h/d?sslmode=disable&&x=y");
        assert!(e.starts_with("query parameter 2 has no '='"), "{e}");
        let e = url_err("postgres://u@h/d?password=hunter2=x");
        assert!(e.starts_with("parameter password has a second '='"), "{e}");
        assert!(!e.contains("hunter2"));
        let e = url_err("postgres://u@h/d?hunter2=x=y");
        assert!(e.starts_with("query parameter 1 has a second '='"), "{e}");
    }

    #[test]
    fn missing_pieces() {
        let e = url_err("postgres:///records");
        assert!(e.starts_with("names no host"), "{e}");
        let e = url_err("postgres://u@/records");
        assert!(e.starts_with("names no host"), "{e}");
        assert!(e.contains("Unix-domain sockets are not supported"), "{e}");
        let e = url_err("postgres://u@%2Fvar%2Frun%2Fpostgresql/records");
        assert!(e.contains("socket directory"), "{e}");
        let e = url_err("postgres://u@/d?host=%2Ftmp");
        assert!(e.contains("socket directory"), "{e}");
        assert!(url_err("postgres://:pw@h/d").starts_with("names no user"));
        assert!(url_err("postgres://h/d").starts_with("names no user"));
        assert!(url_err("postgres://h/d?user=").starts_with("names no user"));
    }

    #[test]
    fn bad_ports_are_named_by_host_not_quoted() {
        for u in [
            "postgres://u@h:54x2/d",
            "postgres://u@h:0/d",
            "postgres://u@h:70000/d",
            "postgres://u@h:-1/d",
        ] {
            assert_eq!(
                url_err(u),
                "the port of host \"h\" is not a number from 1 to 65535",
                "{u}"
            );
        }
    }

    #[test]
    fn not_a_url() {
        let e = url_err("mysql://u:hunter2@h/d");
        assert!(e.starts_with("must start with postgres://"), "{e}");
        let e = url_err("host=h user=u password=hunter2");
        assert!(e.starts_with("is a key=value connection string"), "{e}");
        assert!(url_err("POSTGRES://u@h/d").starts_with("must start with"));
    }

    #[test]
    fn unencoded_special_characters_in_the_password_are_refused_unquoted() {
        for u in [
            "postgres://u:hunter2@x@h/d",   // '@' in the password
            "postgres://u:hunt/er2@h/d",    // '/' in the password
            "postgres://u:hunter2/@h:5432", // ditto
            "postgres://u@h/d@x",
        ] {
            let e = url_err(u);
            assert!(e.contains("percent-encode"), "{u}: {e}");
            assert!(!e.contains("hunt"), "{u}: {e}");
        }
        // An '@' in a query value is fine once there is a user.
        let i = url("postgres://u@h/d?application_name=a@b");
        assert_eq!(i.application_name.as_deref(), Some("a@b"));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let i = url("postgres://u:hunter2-secret@h/d");
        let shown = format!("{i:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    fn env(pairs: &[(&'static str, &str)]) -> Result<ConnInfo, (&'static str, String)> {
        let pairs: Vec<(&'static str, String)> =
            pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
        parse_env(move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn environment_variables() {
        let i = env(&[
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLROOTCERT", "/ca.pem"),
            ("PGSSLCERT", "/c.pem"),
            ("PGSSLKEY", "/k.pem"),
            ("PGAPPNAME", "batch"),
            ("PGCHANNELBINDING", "require"),
            ("PGREQUIREAUTH", "scram-sha-256"),
            ("PGTARGETSESSIONATTRS", "read-write"),
        ])
        .unwrap();
        assert_eq!(i.sslmode, Some(SslMode::VerifyCa));
        assert_eq!(i.sslrootcert, Some(RootCert::File("/ca.pem".into())));
        assert_eq!(i.sslcert, Some(PathBuf::from("/c.pem")));
        assert_eq!(i.sslkey, Some(PathBuf::from("/k.pem")));
        assert_eq!(i.application_name.as_deref(), Some("batch"));
        assert_eq!(i.channel_binding, Some(ChannelBinding::Require));
        assert_eq!(i.require_auth, Some(vec![AuthMethod::ScramSha256]));
        assert_eq!(i.target_session_attrs, Some(TargetSessionAttrs::ReadWrite));
        assert!(i.hosts.is_empty() && i.user.is_none() && i.password.is_none());

        assert_eq!(env(&[("PGSSLMODE", "  ")]).unwrap(), ConnInfo::default());
        let (var, problem) = env(&[("PGSSLMODE", "allow")]).unwrap_err();
        assert_eq!(var, "PGSSLMODE");
        assert!(problem.contains("not supported"), "{problem}");
        let (var, _) = env(&[("PGREQUIREAUTH", "md5,!md5")]).unwrap_err();
        assert_eq!(var, "PGREQUIREAUTH");
        assert_eq!(env_variable_for("sslrootcert"), Some("PGSSLROOTCERT"));
        assert_eq!(env_variable_for("connect_timeout"), None);
    }

    /// What the table of parameters drives: the variables (in the order a bad one is found),
    /// the keywords a URL accepts (in the order errors list them), and each keyword once.
    #[test]
    fn the_parameter_table() {
        assert_eq!(
            PG_ENV_VARIABLES,
            [
                ("PGSSLMODE", "sslmode"),
                ("PGSSLROOTCERT", "sslrootcert"),
                ("PGSSLCERT", "sslcert"),
                ("PGSSLKEY", "sslkey"),
                ("PGCHANNELBINDING", "channel_binding"),
                ("PGREQUIREAUTH", "require_auth"),
                ("PGTARGETSESSIONATTRS", "target_session_attrs"),
                ("PGAPPNAME", "application_name"),
            ]
        );
        assert_eq!(
            supported(),
            "host, port, user, password, dbname, sslmode, sslrootcert, sslcert, sslkey, \
             channel_binding, require_auth, target_session_attrs, application_name, \
             fallback_application_name, connect_timeout"
        );
        for (i, p) in PARAMETERS.iter().enumerate() {
            assert!(
                !PARAMETERS[..i].iter().any(|q| q.keyword == p.keyword),
                "{} twice",
                p.keyword
            );
            assert!(is_known(p.keyword) && !UNSUPPORTED.contains(&p.keyword));
            assert_eq!(env_variable_for(p.keyword), p.variable);
        }
        // Every parameter a URL sets is merged, seen by `sets` and shown by `Debug`.
        let all = url(
            "postgres://u:pw@h/d?sslmode=require&sslrootcert=/ca&sslcert=/c&sslkey=/k\
             &channel_binding=require&require_auth=scram-sha-256&target_session_attrs=any\
             &application_name=a&fallback_application_name=f&connect_timeout=3",
        );
        let shown = format!("{all:?}");
        for p in PARAMETERS {
            assert!(all.sets(p.keyword), "{}", p.keyword);
            assert!(!ConnInfo::default().sets(p.keyword), "{}", p.keyword);
            assert!(shown.contains(&format!("{}: Some(", p.keyword)), "{shown}");
        }
        assert_eq!(ConnInfo::default().or(all.clone()), all);
        assert_eq!(all.clone().or(ConnInfo::default()), all);
    }

    #[test]
    fn url_parameters_win_over_environment_variables() {
        let from_url = url("postgres://u@h/d?sslmode=require&application_name=web");
        let from_environment = env(&[
            ("PGSSLMODE", "disable"),
            ("PGAPPNAME", "batch"),
            ("PGCHANNELBINDING", "disable"),
        ])
        .unwrap();
        let i = from_url.or(from_environment);
        assert_eq!(i.sslmode, Some(SslMode::Require));
        assert_eq!(i.application_name.as_deref(), Some("web"));
        assert_eq!(i.channel_binding, Some(ChannelBinding::Disable));
        assert_eq!(i.hosts, hosts(&[("h", 5432)]));
    }

    fn params() -> ConnectParams {
        ConnectParams::new("x", 1, "x", None, "x")
    }

    #[test]
    fn applied_to_connect_params() {
        let i = url(
            "postgres://al%40ice:p%40ss@[::1]:5433,h2/db?sslmode=verify-full&sslrootcert=ca.pem\
             &sslcert=c&sslkey=k&channel_binding=require&require_auth=scram-sha-256\
             &target_session_attrs=read-write&connect_timeout=9",
        );
        i.check().unwrap();
        let mut p = params();
        i.apply_to(&mut p);
        assert_eq!((p.host.as_str(), p.port), ("::1", 5433));
        assert_eq!(p.more_hosts, hosts(&[("h2", 5432)]));
        assert_eq!(p.user, "al@ice");
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert_eq!(p.dbname, "db");
        assert_eq!(p.tls.mode, SslMode::VerifyFull);
        assert_eq!(p.tls.root_cert, Some(RootCert::File("ca.pem".into())));
        assert_eq!(p.tls.cert, Some(PathBuf::from("c")));
        assert_eq!(p.tls.key, Some(PathBuf::from("k")));
        assert_eq!(p.channel_binding, ChannelBinding::Require);
        assert_eq!(p.require_auth, Some(vec![AuthMethod::ScramSha256]));
        assert_eq!(p.target_session_attrs, TargetSessionAttrs::ReadWrite);
        assert_eq!(p.connect_timeout, Duration::from_secs(9));
        assert_eq!(p.application_name, "records-service", "the default stays");

        // Nothing given: nothing changes.
        let mut q = params();
        ConnInfo::default().apply_to(&mut q);
        assert_eq!(format!("{q:?}"), format!("{:?}", params()));
    }

    #[test]
    fn implied_defaults() {
        let mut p = params();
        url("postgres://u@h/d?sslrootcert=system").apply_to(&mut p);
        assert_eq!(
            p.tls.mode,
            SslMode::VerifyFull,
            "libpq: system implies verify-full"
        );
        let mut p = params();
        url("postgres://u@h/d?fallback_application_name=f").apply_to(&mut p);
        assert_eq!(p.application_name, "f");
        let mut p = params();
        url("postgres://u@h/d?fallback_application_name=f&application_name=a").apply_to(&mut p);
        assert_eq!(p.application_name, "a");
        let mut p = params();
        url("postgres://u@h/d?fallback_application_name=f")
            .or(env(&[("PGAPPNAME", "e")]).unwrap())
            .apply_to(&mut p);
        assert_eq!(
            p.application_name, "e",
            "PGAPPNAME beats the fallback, as libpq"
        );
    }

    #[test]
    fn conflicting_settings_blame_one_that_is_set() {
        let blame = |u: &str| url(u).check().unwrap_err();
        let (param, problem) = blame("postgres://u@h/d?sslrootcert=system&sslmode=require");
        assert_eq!(param, "sslmode");
        assert!(problem.contains("use verify-full"), "{problem}");
        url("postgres://u@h/d?sslrootcert=system&sslmode=verify-full")
            .check()
            .unwrap();
        assert_eq!(blame("postgres://u@h/d?sslcert=c").0, "sslcert");
        assert_eq!(blame("postgres://u@h/d?sslkey=k").0, "sslkey");
        let (param, problem) = blame("postgres://u@h/d?channel_binding=require&sslmode=disable");
        assert_eq!(param, "channel_binding");
        assert!(problem.contains("needs TLS"), "{problem}");
        let (_, problem) = blame("postgres://u@h/d?channel_binding=require&require_auth=md5");
        assert!(problem.contains("needs scram-sha-256"), "{problem}");
        for (param, u) in [
            ("sslmode", "postgres://u@h/d?sslmode=require"),
            ("connect_timeout", "postgres://u@h/d?connect_timeout=3"),
        ] {
            assert!(url(u).sets(param));
            assert!(!ConnInfo::default().sets(param));
        }
    }

    #[test]
    fn pieces_of_a_password_are_never_quoted() {
        // An unencoded '@' in a query password: refused, not split into host and user.
        for url in [
            "postgres://db.example.com?user=app&password=s3cr@t",
            "postgres://db:5432?user=app&password=s3cr@t",
        ] {
            let e = url_err(url);
            assert!(e.contains("percent-encode"), "{url}: {e}");
            assert!(!e.contains("s3cr"), "{url}: {e}");
        }
        // An unencoded '&' in a query password: its pieces are not quoted as keys or values.
        let e = url_err("postgres://u@h/d?password=Tr0ub&dor=3");
        assert!(!e.contains("dor"), "{e}");
        let e = url_err("postgres://u@h/d?password=ab&sslmode=hunter2");
        assert!(
            !e.contains("hunter2") && e.contains("query parameter 2"),
            "{e}"
        );
    }
}
