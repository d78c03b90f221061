//! `samizdat link`: the links `samizdat serve` prints, without starting a
//! server, and QR codes of them (in the terminal, as SVG or as PNG).
//!
//! It takes the same options as `serve` (and reads the same state directory)
//! so that it prints exactly the links `serve` would. It binds no port: the
//! host comes from `--public-host`, else the first `--listen` address, else
//! this machine's address as `serve` picks it for 0.0.0.0:443.

use crate::serve::config::{ServeArgs, ServeConfig, DEFAULT_PORT, FALLBACK_PORT};
use crate::serve::links::{self, LinkEntry};
use qrcode::render::{svg, unicode::Dense1x2};
use qrcode::{Color, QrCode};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use wire::secret::{self, Mode};

/// Pixels (PNG) or user units (SVG) per QR module: a 41-module code with
/// its quiet zone is 392 px wide, plenty for a phone camera.
const MODULE_PX: u32 = 8;
/// Light modules around the code, as the QR standard asks for.
const QUIET_ZONE: u32 = 4;

/// Which link a QR code holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkFormat {
    /// `tg://proxy?…`: a phone camera hands it straight to the Telegram app.
    Tg,
    /// `https://t.me/proxy?…`: opens in a browser, which offers the app.
    Tme,
}

/// Command-line options of `samizdat link`.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// Only this user's links.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Print a QR code under each link (the default when standard output is
    /// a terminal).
    #[arg(long, overrides_with = "no_qr")]
    pub qr: bool,

    /// Print no QR codes in the terminal.
    #[arg(long, overrides_with = "qr")]
    pub no_qr: bool,

    /// Which link the QR codes hold.
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "tg")]
    pub format: LinkFormat,

    /// Write the QR code as SVG to PATH. With several links, one file each:
    /// PATH's name plus -USER-FORM (e.g. qr-default-ee-example.com.svg).
    #[arg(long, value_name = "PATH")]
    pub qr_svg: Option<PathBuf>,

    /// Write the QR code as PNG to PATH, named like --qr-svg's files.
    #[arg(long, value_name = "PATH")]
    pub qr_png: Option<PathBuf>,

    /// Spell secrets in base64url (as mtg prints them) instead of hex.
    #[arg(long)]
    pub base64: bool,

    /// The server's options: give the same ones as to `samizdat serve`.
    #[command(
        flatten,
        next_help_heading = "Server options (as for `samizdat serve`)"
    )]
    pub serve: ServeArgs,
}

/// Runs `samizdat link`: links and QR codes to standard output, notes to
/// standard error.
pub fn run(args: &LinkArgs) -> anyhow::Result<()> {
    // The same loading as `serve` (config file, flags, state directory).
    let (config, created) = ServeConfig::load(&args.serve)?;
    let addr = link_addr(&config)?;
    let (host, hint) = links::link_host(&config, addr);
    let entries = select(links::entries(&config), args.user.as_deref())?;

    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let qr = if args.qr || args.no_qr { args.qr } else { tty };
    let colour = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Everything to print: the header lines, the QR content, and the tag
    // that names its QR file.
    let mut items: Vec<(String, String, String)> = Vec::new();
    for e in &entries {
        let text = if args.base64 {
            e.secret.to_base64url()
        } else {
            e.secret.to_hex()
        };
        let l = secret::links(&host, addr.port(), &text);
        let content = match args.format {
            LinkFormat::Tg => l.tg.clone(),
            LinkFormat::Tme => l.tme.clone(),
        };
        let form = match (&e.secret.mode, &e.secret.domain) {
            (Mode::FakeTls, Some(d)) => format!("ee-{d}"),
            (m, _) => m.name().to_string(),
        };
        items.push((
            format!("user {} ({}):\n  {}\n  {}", e.user, e.label, l.tg, l.tme),
            content,
            format!("{}-{form}", e.user),
        ));
    }
    if config.tunnel {
        let key = crate::state::transport_key(config.transport_key.as_deref(), &config.state_dir)?;
        let public = wire::tunnel::handshake::ServerKey::from_secret(key).public();
        for (user, link) in links::samizdat_links(&config, &host, addr.port(), &public) {
            if args.user.as_deref().is_some_and(|u| u != user) {
                continue;
            }
            let text = link.to_string();
            items.push((
                format!("user {user} (samizdat client):\n  {text}"),
                text,
                format!("{user}-samizdat"),
            ));
        }
    }
    let mut out = std::io::BufWriter::new(stdout.lock());
    let several = items.len() > 1;
    for (header, content, tag) in &items {
        writeln!(out, "{header}")?;
        if !(qr || args.qr_svg.is_some() || args.qr_png.is_some()) {
            continue;
        }
        let code = QrCode::new(content.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot make a QR code of the link: {e}"))?;
        if let Some(path) = &args.qr_svg {
            let path = file_for(path, tag, several);
            write_file(&path, svg(&code).as_bytes())?;
            writeln!(out, "  QR code: {}", path.display())?;
        }
        if let Some(path) = &args.qr_png {
            let path = file_for(path, tag, several);
            write_file(&path, &png(&code)?)?;
            writeln!(out, "  QR code: {}", path.display())?;
        }
        if qr {
            writeln!(out, "{}\n", terminal(&code, colour))?;
        }
    }
    out.flush()?;
    drop(out);

    if let Some(created) = created {
        let verb = if created {
            "generated a new secret and saved it"
        } else {
            "using the secret saved"
        };
        eprintln!(
            "{verb} in {} (`samizdat serve` with the same state directory uses it)",
            config.state_dir.join("state.toml").display()
        );
    }
    if config.listen.is_none() {
        eprintln!(
            "note: without --listen, `samizdat serve` listens on port {DEFAULT_PORT}, or \
             {FALLBACK_PORT} if it may not bind {DEFAULT_PORT}; give both commands the same --listen"
        );
    }
    if let Some(h) = hint {
        eprintln!("note: {h}");
    }
    Ok(())
}

/// The address `serve` would put in its links, found without binding: the
/// first `--listen` address, else 0.0.0.0:443.
fn link_addr(config: &ServeConfig) -> anyhow::Result<SocketAddr> {
    let addr = match config.listen.as_deref() {
        Some([first, ..]) => *first,
        _ => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
    };
    if addr.port() == 0 {
        anyhow::bail!(
            "--listen {addr}: port 0 is picked only when `samizdat serve` starts; \
             give a fixed port to print links"
        );
    }
    Ok(addr)
}

/// Keeps `user`'s entries, or all of them when no user is named.
fn select(entries: Vec<LinkEntry>, user: Option<&str>) -> anyhow::Result<Vec<LinkEntry>> {
    let Some(name) = user else {
        return Ok(entries);
    };
    let mine: Vec<LinkEntry> = entries.iter().filter(|e| e.user == name).cloned().collect();
    if mine.is_empty() {
        let mut names: Vec<&str> = Vec::new();
        for e in &entries {
            if !names.contains(&e.user.as_str()) {
                names.push(&e.user);
            }
        }
        anyhow::bail!("no user named {name}; users: {}", names.join(", "));
    }
    Ok(mine)
}

/// `path` itself for a single link; with several, `path` with `-TAG`
/// (user and form, e.g. `alice-ee-example.com`) added before the extension.
fn file_for(path: &Path, tag: &str, several: bool) -> PathBuf {
    if !several {
        return path.to_path_buf();
    }
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{tag}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{tag}"),
    };
    path.with_file_name(name)
}

/// Writes a QR file readable by its owner only: it holds a secret.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// The code as text: two rows of modules per line in half blocks, drawn
/// for light text on a dark background (light modules are blocks). With
/// `colour`, each line sets white on black itself, so it scans on any
/// terminal theme.
fn terminal(code: &QrCode, colour: bool) -> String {
    let text = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .build();
    if !colour {
        return text;
    }
    text.lines()
        .map(|l| format!("\x1b[97;40m{l}\x1b[0m"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn svg(code: &QrCode) -> String {
    code.render::<svg::Color>()
        .module_dimensions(MODULE_PX, MODULE_PX)
        .build()
}

/// An 8-bit greyscale PNG, black modules on white, with the quiet zone.
fn png(code: &QrCode) -> anyhow::Result<Vec<u8>> {
    let modules = code.width() as u32;
    let colours = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * MODULE_PX;
    let mut pixels = vec![0xffu8; (side * side) as usize];
    for y in 0..side {
        for x in 0..side {
            let (mx, my) = (x / MODULE_PX, y / MODULE_PX);
            let inside = (QUIET_ZONE..QUIET_ZONE + modules).contains(&mx)
                && (QUIET_ZONE..QUIET_ZONE + modules).contains(&my);
            if inside {
                let i = (my - QUIET_ZONE) * modules + (mx - QUIET_ZONE);
                if colours[i as usize] == Color::Dark {
                    pixels[(y * side + x) as usize] = 0;
                }
            }
        }
    }
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, side, side);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header()?;
    w.write_image_data(&pixels)?;
    w.finish()?;
    Ok(bytes)
}
