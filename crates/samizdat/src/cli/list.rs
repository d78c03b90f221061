//! `samizdat list`: the operator's side of signed server lists
//! (`wire::server_list`, docs/operators.md).
//!
//! - `keygen` makes the Ed25519 key that signs lists (its public half goes
//!   into links as `lk=`);
//! - `sign` signs a list of endpoints and prints it, with the DNS TXT
//!   strings to publish it under a name;
//! - `verify` checks a list as a client would.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::io::Write;
use std::path::{Path, PathBuf};
use wire::link::{parse_endpoint, Endpoint, Link};
use wire::server_list::{self, Listed, ServerList};

/// `samizdat list` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ListCommand {
    /// Make a new list-signing key: writes the secret key to FILE (owner
    /// only) and prints the public key and the `&lk=…` link parameter.
    Keygen {
        /// Where to write the secret key; refuses to overwrite a file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a list of endpoints: prints the signed list and the DNS TXT
    /// record that publishes it.
    Sign(SignArgs),
    /// Check a signed list as a client would: prints its endpoints, or
    /// exactly why it is refused (exit code 1).
    Verify(VerifyArgs),
}

/// Options of `samizdat list sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The secret key file from `samizdat list keygen`.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The list's serial; each new list needs a higher one than the last
    /// [default: now, in Unix seconds].
    #[arg(long, value_name = "N")]
    pub serial: Option<u64>,
    /// How long clients may use the list, e.g. 30d, 12h.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub expires: String,
    /// An endpoint: HOST:PORT, [IPV6]:PORT or wss://HOST[:PORT]/PATH,
    /// optionally followed by a space and the server's public key when it
    /// is not the link's pk. Repeat for more; tried in this order.
    #[arg(long = "endpoint", value_name = "ENDPOINT")]
    pub endpoints: Vec<String>,
    /// A file with one endpoint per line (same syntax; blank lines and
    /// lines starting with # are skipped), after any --endpoint.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Also write the signed list to FILE (to serve over HTTPS or ship).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The DNS name the TXT record goes under (as in the link's
    /// lu=dns:NAME), to print a complete zone-file line.
    #[arg(long, value_name = "NAME")]
    pub dns_name: Option<String>,
}

/// Options of `samizdat list verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The list's public key in base64url, or a samizdat:// link with lk=.
    #[arg(long, value_name = "KEY|LINK")]
    pub key: String,
    /// Refuse the list unless its serial is above N (the serial a client
    /// already has).
    #[arg(long, value_name = "N")]
    pub newer_than: Option<u64>,
    /// The signed list.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Runs a `samizdat list` subcommand.
pub fn run(command: &ListCommand) -> anyhow::Result<()> {
    match command {
        ListCommand::Keygen { out } => keygen(out),
        ListCommand::Sign(args) => sign(args),
        ListCommand::Verify(args) => verify(args),
    }
}

/// The key file `keygen` writes (TOML).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    /// The 32-byte Ed25519 secret key (seed), base64url.
    secret: String,
    /// Its public key, base64url (for humans; checked on load).
    public: String,
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    let mut secret = [0u8; 32];
    crate::random::fill(&mut secret);
    let public = server_list::public_key(&secret);
    let text = format!(
        "# samizdat server-list signing key (Ed25519), made by `samizdat list keygen`.\n\
         # Keep it secret, ideally offline: whoever has it can point your users at any server.\n{}",
        toml::to_string(&KeyFile {
            secret: URL_SAFE_NO_PAD.encode(secret),
            public: URL_SAFE_NO_PAD.encode(public),
        })?
    );
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} exists; it may be the key your users' links trust, so it is not overwritten (pick another --out)",
                out.display()
            )
        } else {
            anyhow::anyhow!("cannot create {}: {e}", out.display())
        }
    })?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    let b64 = URL_SAFE_NO_PAD.encode(public);
    println!(
        "wrote the secret list key to {} (owner-only)",
        out.display()
    );
    println!("public key: {b64}");
    println!("key id: {}", server_list::key_id(&public));
    println!("add to your samizdat:// links: &lk={b64}");
    println!("and where clients fetch lists, e.g.: &lu=https%3A%2F%2Fexample.org%2Fsamizdat.list&lu=dns%3A_samizdat.example.org");
    Ok(())
}

/// Reads a key file written by [`keygen`]; returns the secret key.
fn read_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the key file {}: {e}", path.display()))?;
    let file: KeyFile = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a key file from `samizdat list keygen`: {e}",
            path.display()
        )
    })?;
    let secret: [u8; 32] = URL_SAFE_NO_PAD
        .decode(file.secret.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!("{}: secret must be 32 bytes in base64url", path.display())
        })?;
    let public = server_list::public_key(&secret);
    if URL_SAFE_NO_PAD.encode(public) != file.public.trim() {
        anyhow::bail!(
            "{}: public does not belong to secret; the file is damaged",
            path.display()
        );
    }
    Ok(secret)
}

/// Parses `ENDPOINT [SERVER_KEY]`.
fn parse_listed(text: &str) -> anyhow::Result<Listed> {
    let mut parts = text.split_whitespace();
    let endpoint = parts
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty endpoint"))?;
    let endpoint: Endpoint = parse_endpoint(endpoint)?;
    let server_key = match parts.next() {
        Some(key) => Some(
            URL_SAFE_NO_PAD
                .decode(key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{text:?}: the server key after the endpoint must be 32 bytes in base64url (the link's pk=)"
                    )
                })?,
        ),
        None => None,
    };
    if parts.next().is_some() {
        anyhow::bail!("{text:?}: expected ENDPOINT [SERVER_KEY]");
    }
    Ok(Listed {
        endpoint,
        server_key,
    })
}

fn sign(args: &SignArgs) -> anyhow::Result<()> {
    let secret = read_key(&args.key)?;
    let mut lines: Vec<String> = args.endpoints.clone();
    if let Some(path) = &args.from {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        lines.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    if lines.is_empty() {
        anyhow::bail!("no endpoints: give --endpoint HOST:PORT (repeatable) or --from FILE");
    }
    let mut endpoints = Vec::new();
    for line in &lines {
        let listed = parse_listed(line).map_err(|e| anyhow::anyhow!("endpoint {line:?}: {e}"))?;
        if !endpoints.contains(&listed) {
            endpoints.push(listed);
        }
    }
    let life = crate::duration::parse(&args.expires)
        .map_err(|e| anyhow::anyhow!("--expires: {e}"))?
        .as_secs();
    if life == 0 {
        anyhow::bail!("--expires must be at least one second");
    }
    let now = crate::clock::unix_now();
    let list = ServerList {
        serial: args.serial.unwrap_or(now),
        issued: now,
        expires: now.saturating_add(life),
        endpoints,
    };
    let text = server_list::sign(&list, &secret)?;
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{text}\n"))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    println!("{text}");
    println!();
    println!(
        "serial {}, {} endpoint(s), expires in {} (Unix {}), signed by key {}{}",
        list.serial,
        list.endpoints.len(),
        human(life),
        list.expires,
        server_list::key_id(&server_list::public_key(&secret)),
        args.out
            .as_ref()
            .map(|p| format!("; written to {}", p.display()))
            .unwrap_or_default()
    );
    let strings = txt_strings(&text);
    println!(
        "DNS: publish one TXT record of {} string(s) at the name in the links' lu=dns:NAME:",
        strings.len()
    );
    let name = args
        .dns_name
        .as_deref()
        .map(|n| format!("{}.", n.trim_end_matches('.')))
        .unwrap_or_else(|| "NAME.".into());
    println!("{name} 3600 IN TXT {}", strings.join(" "));
    Ok(())
}

/// The text split into quoted DNS character-strings of at most 255 bytes
/// (base64url needs no escaping); clients join a record's strings.
fn txt_strings(text: &str) -> Vec<String> {
    text.as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect()
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 3600 => format!("{:.1} hours", s as f64 / 3600.0),
        s => format!("{s} s"),
    }
}

/// The list key from `--key`: base64url, or a link's `lk=`.
fn list_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    if text.starts_with(wire::link::SCHEME) {
        let link = Link::parse(text).map_err(|e| anyhow::anyhow!("--key link: {e}"))?;
        return link
            .list_key
            .ok_or_else(|| anyhow::anyhow!("--key: the link has no lk= list key"));
    }
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--key must be the 32-byte list public key in base64url (43 characters) or a samizdat:// link"
            )
        })
}

/// The signed text in a file: its first line that starts like a list, so
/// the whole output of `list sign` works too.
pub fn extract(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(server_list::PREFIX))
        .unwrap_or(text.trim())
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let key = list_key(&args.key)?;
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?;
    let now = crate::clock::unix_now();
    let list = server_list::verify(extract(&text), &key, now, args.newer_than)
        .map_err(|e| anyhow::anyhow!("{}: refused: {e}", args.file.display()))?;
    println!(
        "valid: serial {}, signed by key {}, expires in {} (Unix {})",
        list.serial,
        server_list::key_id(&key),
        human(list.expires - now),
        list.expires
    );
    for listed in &list.endpoints {
        match &listed.server_key {
            Some(k) => println!("{} {}", listed.endpoint, URL_SAFE_NO_PAD.encode(k)),
            None => println!("{}", listed.endpoint),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_strings_split_at_255_bytes() {
        let text = "A".repeat(600);
        let s = txt_strings(&text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].len(), 257);
        assert_eq!(s[2].len(), 90 + 2);
        let joined: String = s.iter().map(|q| q.trim_matches('"')).collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn endpoints_take_an_optional_server_key() {
        let l = parse_listed("203.0.113.5:443").unwrap();
        assert_eq!(l.server_key, None);
        let key = URL_SAFE_NO_PAD.encode([3u8; 32]);
        let l = parse_listed(&format!("wss://cdn.example.net/s {key}")).unwrap();
        assert_eq!(l.server_key, Some([3; 32]));
        assert_eq!(l.endpoint.ws_path.as_deref(), Some("/s"));
        assert!(parse_listed("h:1 AAAA").is_err());
        assert!(parse_listed("h:0").is_err());
    }

    #[test]
    fn extract_finds_the_list_line() {
        assert_eq!(extract("SZL1.a.b\n\nserial 5\n"), "SZL1.a.b");
        assert_eq!(extract("  junk  "), "junk");
    }
}
