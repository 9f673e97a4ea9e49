//! `EmailAddress`: an address that passed validation. The only way to build one is
//! [`EmailAddress::parse`], so an invalid address cannot reach the database from here.
//!
//! The rule accepts real addresses (dots and `+` in the local part, hyphens and subdomains in the
//! domain, long top-level domains) and everything the original service accepted
//! (`^\w+@[a-zA-Z_]+?\.[a-zA-Z]{2,3}$`, where `\w` is Unicode-aware), and rejects what is not an
//! address. Quoted local parts and IP-literal domains are not accepted: no client of the original
//! could send them.

/// RFC 5321 limits: 254 for the whole path, 64 for the local part, 63 for a DNS label.
pub const MAX_LEN: usize = 254;
const MAX_LOCAL: usize = 64;
const MAX_LABEL: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmailAddress<'a>(&'a str);

/// The input is not an address this service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidEmail;

impl<'a> EmailAddress<'a> {
    pub fn parse(s: &'a str) -> Result<EmailAddress<'a>, InvalidEmail> {
        if s.len() > MAX_LEN || s.chars().count() > MAX_LEN {
            return Err(InvalidEmail);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(InvalidEmail)?;
        if !valid_local(local) || !valid_domain(domain) {
            return Err(InvalidEmail);
        }
        Ok(EmailAddress(s))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

fn valid_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= MAX_LOCAL
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c) || is_unicode_word(c)
        })
}

/// Letters, digits and connector punctuation beyond ASCII: what Python's `\w` also matches.
fn is_unicode_word(c: char) -> bool {
    !c.is_ascii() && !c.is_whitespace() && !c.is_control() && (c.is_alphanumeric() || c == '‿')
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let tld = labels[labels.len() - 1];
    labels.iter().all(|label| {
        !label.is_empty()
            && label.chars().count() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    }) && tld.chars().count() >= 2
        && tld.chars().next().is_some_and(char::is_alphabetic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_addresses_and_everything_the_original_accepted() {
        let accepted = [
            ("a@b.com", "the original's shape"),
            (
                "user_1@my_host.org",
                "underscores, as the original's \\w and [a-zA-Z_]",
            ),
            ("élodie@example.fr", "Unicode letters, as Python's \\w"),
            (
                "first.last+tag@mail.example-host.co.uk",
                "dots, plus, hyphen, subdomains",
            ),
            ("x@example.museum", "long top-level domain"),
            ("o'brien@example.ie", "apostrophe is atext"),
            ("user@xn--bcher-kva.example", "punycode label"),
            ("ALICE@X.COM", "upper case"),
            ("a@b.co", "two-letter TLD"),
            ("1234@numbers.net", "digits"),
        ];
        for (addr, why) in accepted {
            assert!(
                EmailAddress::parse(addr).is_ok(),
                "{addr} must be accepted: {why}"
            );
        }
        let max = format!(
            "{}@{}.{}.{}.{}",
            "l".repeat(64),
            "d".repeat(61),
            "d".repeat(61),
            "d".repeat(61),
            "com"
        );
        assert_eq!(max.len(), 254);
        assert!(
            EmailAddress::parse(&max).is_ok(),
            "254 characters is allowed"
        );
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let too_long = format!(
            "{}@{}.{}.{}.{}",
            "l".repeat(64),
            "d".repeat(61),
            "d".repeat(61),
            "d".repeat(61),
            "comm"
        );
        let rejected = [
            ("plainaddress", "no @"),
            ("@example.com", "empty local part"),
            ("user@", "empty domain"),
            ("user@localhost", "domain without a dot"),
            ("us er@example.com", "space"),
            ("user@exa mple.com", "space in the domain"),
            ("user\n@example.com", "control character"),
            ("user@example.com\u{0}", "NUL"),
            (".user@example.com", "leading dot"),
            ("user.@example.com", "trailing dot"),
            ("us..er@example.com", "double dot"),
            ("user@-example.com", "label starts with a hyphen"),
            ("user@example..com", "empty label"),
            ("user@example.c", "one-letter TLD"),
            ("user@example.123", "numeric TLD"),
            ("a@b@c.com", "two @"),
            ("\"quoted\"@example.com", "quoted local part"),
            ("user@[127.0.0.1]", "IP literal"),
            (long_local.as_str(), "local part over 64"),
            (too_long.as_str(), "over 254 characters"),
            ("", "empty"),
        ];
        for (addr, why) in rejected {
            assert!(
                EmailAddress::parse(addr).is_err(),
                "{addr:?} must be rejected: {why}"
            );
        }
    }
}
