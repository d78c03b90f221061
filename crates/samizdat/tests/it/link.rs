//! `samizdat link`: every printed link parses back into the secret it was
//! made from, it prints what `samizdat serve` prints for the same options,
//! and its QR codes (terminal, SVG, PNG) read back, with a QR decoder, into
//! the link text.

use std::collections::BTreeSet;
use std::io::BufReader;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use wire::secret::{Key, Secret};

const KEY1: &str = "1694ecf7cd1f462ac8ff00a26bb35a6b";
const KEY2: &str = "135dc03c8644080e42dde6fa614db2a8";
/// An ee secret for KEY2 with the domain b.example.
const EE2: &str = "ee135dc03c8644080e42dde6fa614db2a8622e6578616d706c65";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_samizdat")
}

/// Runs `samizdat link ARGS` with its own state directory.
fn link(state: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("link")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("SAMIZDAT_STATE_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run samizdat link")
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "samizdat link failed: {stderr}\n{stdout}"
    );
    stdout
}

/// `(server, port, secret)` of a `tg://proxy` or `https://t.me/proxy` link.
fn parse_link(link: &str) -> (String, u16, Secret) {
    let (base, query) = link.split_once('?').expect("a query string");
    assert!(
        base == "tg://proxy" || base == "https://t.me/proxy",
        "{link}"
    );
    assert!(!query.contains('%'), "nothing here needs escaping: {link}");
    let get = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name}= in {link}"))
    };
    let port = get("port").parse().expect("a numeric port");
    let secret = Secret::parse(get("secret")).expect("the secret parses");
    (get("server").to_string(), port, secret)
}

/// The `(user, samizdat:// link)` blocks of the output.
fn samizdat_blocks(stdout: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = stdout.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(user) = l
            .strip_prefix("user ")
            .and_then(|r| r.strip_suffix(" (samizdat client):"))
        {
            out.push((user.to_string(), lines[i + 1].trim().to_string()));
        }
    }
    out
}

/// The `(user, label, tg, tme)` blocks of the output (the tg:// ones).
fn blocks(stdout: &str) -> Vec<(String, String, String, String)> {
    let lines: Vec<&str> = stdout.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.ends_with("(samizdat client):") {
            continue;
        }
        if let Some(rest) = l.strip_prefix("user ") {
            let (user, label) = rest.split_once(" (").expect("user NAME (FORM):");
            let label = label.strip_suffix("):").expect("ends with ):");
            let tg = lines[i + 1].trim().to_string();
            let tme = lines[i + 2].trim().to_string();
            out.push((user.to_string(), label.to_string(), tg, tme));
        }
    }
    out
}

fn link_lines(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tg://") || l.starts_with("https://t.me/"))
        .map(String::from)
        .collect()
}

#[test]
fn every_link_parses_back_into_its_secret() {
    let state = tempfile::tempdir().unwrap();
    let key = |hex: &str| Key::from_hex(hex).unwrap();
    // user1 has a bare key, user2 an ee secret that adds b.example.
    let mut want = BTreeSet::new();
    for (user, k) in [("user1", KEY1), ("user2", KEY2)] {
        for d in ["a.example", "b.example"] {
            want.insert((user.to_string(), key(k).0, "ee", Some(d.to_string())));
        }
        want.insert((user.to_string(), key(k).0, "dd", None));
        want.insert((user.to_string(), key(k).0, "plain", None));
    }
    for base64 in [false, true] {
        let mut args = vec![
            "--secret",
            KEY1,
            "--secret",
            EE2,
            "--modes",
            "ee,dd,plain",
            "--domain",
            "a.example",
            "--listen",
            "0.0.0.0:4433",
            "--public-host",
            "proxy.example.org",
        ];
        if base64 {
            args.push("--base64");
        }
        let stdout = ok(link(state.path(), &args));
        // Standard output is not a terminal here: no QR unless asked.
        assert!(!stdout.contains('█'), "{stdout}");
        let mut got = BTreeSet::new();
        for (user, label, tg, tme) in blocks(&stdout) {
            assert!(tg.starts_with("tg://proxy?"), "{tg}");
            assert!(tme.starts_with("https://t.me/proxy?"), "{tme}");
            let (server, port, secret) = parse_link(&tg);
            assert_eq!((server.as_str(), port), ("proxy.example.org", 4433), "{tg}");
            assert_eq!(parse_link(&tme).2, secret, "tg and t.me links agree");
            assert_eq!(
                tg.split_once('?').unwrap().1,
                tme.split_once('?').unwrap().1
            );
            let text = tg.rsplit_once("secret=").unwrap().1;
            if base64 {
                assert_eq!(text, secret.to_base64url());
            } else {
                assert_eq!(text, secret.to_hex());
            }
            match &secret.domain {
                Some(d) => assert!(label.ends_with(d.as_str()), "{label} vs {d}"),
                None => assert!(label.starts_with(secret.mode.name()), "{label}"),
            }
            got.insert((
                user,
                secret.key.0,
                secret.mode.name(),
                secret.domain.clone(),
            ));
        }
        assert_eq!(got, want, "base64 {base64}:\n{stdout}");
    }
    // With --secret the state directory is not needed, nor written.
    assert!(!state.path().join("state.toml").exists());
}

#[test]
fn link_prints_what_serve_prints_and_shares_the_generated_key() {
    let state = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let common = [
        "--listen",
        &listen,
        "--modes",
        "ee,dd",
        "--domain",
        "cover.localhost",
        "--cover",
        "127.0.0.1:9",
    ];
    // `link` first: it makes the key and says where it keeps it.
    let out = link(state.path(), &common);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let linked = ok(out);
    assert!(stderr.contains("generated a new secret"), "{stderr}");
    assert!(state.path().join("state.toml").exists());
    let saved = std::fs::read_to_string(state.path().join("state.toml")).unwrap();
    assert!(!stderr.contains(saved.lines().last().unwrap().split('"').nth(1).unwrap()));

    // `serve` with the same options and state prints the same links.
    let started = testkit::process::Serve::new(bin())
        .listen(None)
        .state_dir(state.path())
        .args(common)
        .quiet()
        .wait(Duration::from_secs(30))
        .start();
    let served = match started {
        Ok(s) => s.stdout.join("\n") + "\n",
        Err(e) => e.to_string(),
    };
    assert!(
        served.contains("cover site:"),
        "serve did not start: {served}"
    );
    assert!(served.contains("using the secret saved"), "{served}");
    let want = link_lines(&served);
    assert_eq!(want.len(), 4, "{served}");
    assert_eq!(
        link_lines(&linked),
        want,
        "link:\n{linked}\nserve:\n{served}"
    );
}

#[test]
fn unknown_user_is_named_with_the_users_and_no_secret() {
    let state = tempfile::tempdir().unwrap();
    let out = link(
        state.path(),
        &["--secret", KEY1, "--secret", KEY2, "--user", "bob"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no user named bob; users: user1, user2"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert!(!stderr.contains(KEY1) && !stderr.contains(KEY2), "{stderr}");

    let out = link(
        state.path(),
        &["--secret", KEY1, "--secret", KEY2, "--user", "user2"],
    );
    let stdout = ok(out);
    let b = blocks(&stdout);
    assert_eq!(b.len(), 1, "{stdout}");
    assert_eq!(b[0].0, "user2");
    assert_eq!(parse_link(&b[0].2).2.key, Key::from_hex(KEY2).unwrap());
}

#[test]
fn users_from_the_config_file_are_selected_by_name() {
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("samizdat.toml");
    std::fs::write(
        &config,
        format!("[users.alice]\nsecret = \"{KEY1}\"\n[users.bob]\nsecret = \"{KEY2}\"\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = link(state.path(), &["--config", config, "--user", "carol"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no user named carol; users: alice, bob"),
        "{stderr}"
    );
    let stdout = ok(link(
        state.path(),
        &[
            "--config",
            config,
            "--user",
            "bob",
            "--listen",
            "127.0.0.1:443",
        ],
    ));
    let b = blocks(&stdout);
    assert_eq!(b.len(), 1, "{stdout}");
    assert_eq!(b[0].0, "bob");
    assert_eq!(parse_link(&b[0].2).2.key, Key::from_hex(KEY2).unwrap());
}

/// Reads the QR codes in a black-on-white bitmap.
fn read_qr(w: usize, h: usize, dark: impl Fn(usize, usize) -> bool) -> Vec<String> {
    let mut img = rqrr::PreparedImage::prepare_from_bitmap(w, h, dark);
    img.detect_grids()
        .iter()
        .map(|g| g.decode().expect("the QR code decodes").1)
        .collect()
}

/// Decodes a PNG `samizdat link` wrote: square, greyscale, black and white.
fn read_png(path: &Path) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap();
    let mut dec = png::Decoder::new(BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    assert_eq!(w, h, "square");
    assert!(w >= 21 * 8, "at least 8 px per module: {w}");
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let px = &buf[..w * h];
    assert!(
        px.iter().all(|&p| p == 0 || p == 255),
        "black and white only"
    );
    // The quiet zone: the border is white.
    assert!((0..w).all(|i| px[i] == 255 && px[(h - 1) * w + i] == 255));
    read_qr(w, h, |x, y| px[y * w + x] == 0)
}

/// Decodes an SVG `samizdat link` wrote by drawing its module rectangles.
fn read_svg(path: &Path) -> Vec<String> {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(svg.starts_with("<?xml"), "{svg:.80}");
    assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    let size: usize = svg
        .split_once("width=\"")
        .and_then(|(_, r)| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("a width");
    let d = svg
        .split_once("<path")
        .and_then(|(_, r)| r.split_once(" d=\""))
        .and_then(|(_, r)| r.split('"').next())
        .expect("a path of dark modules");
    let mut dark = vec![false; size * size];
    let mut rects = 0;
    // Each module is `M{x} {y}h{w}v{h}H{x}V{y}`.
    for m in d.split('M').filter(|m| !m.is_empty()) {
        let num = |s: &str| s.parse::<usize>().unwrap();
        let (x, rest) = m.split_once(' ').unwrap();
        let (y, rest) = rest.split_once('h').unwrap();
        let (rw, rest) = rest.split_once('v').unwrap();
        let (rh, _) = rest.split_once('H').unwrap();
        let (x, y, rw, rh) = (num(x), num(y), num(rw), num(rh));
        for yy in y..y + rh {
            for xx in x..x + rw {
                dark[yy * size + xx] = true;
            }
        }
        rects += 1;
    }
    assert!(rects > 100, "a QR code has many dark modules: {rects}");
    read_qr(size, size, |x, y| dark[y * size + x])
}

#[test]
fn svg_and_png_files_hold_the_link() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (svg, png) = (dir.path().join("q.svg"), dir.path().join("q.png"));
    let args = [
        "--secret",
        EE2,
        "--no-tunnel",
        "--public-host",
        "proxy.example.org",
        "--qr-svg",
        svg.to_str().unwrap(),
        "--qr-png",
        png.to_str().unwrap(),
    ];
    let stdout = ok(link(state.path(), &args));
    let b = blocks(&stdout);
    assert_eq!(b.len(), 1, "{stdout}");
    let (tg, tme) = (&b[0].2, &b[0].3);
    assert_eq!(parse_link(tg).2, Secret::parse(EE2).unwrap());
    // One link: the files are written exactly where asked, and named.
    assert!(
        stdout.contains(&format!("QR code: {}", svg.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("QR code: {}", png.display())),
        "{stdout}"
    );
    assert_eq!(read_svg(&svg), vec![tg.clone()]);
    assert_eq!(read_png(&png), vec![tg.clone()]);
    #[cfg(unix)]
    for f in [&svg, &png] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{}: it holds a secret", f.display());
    }

    // --format tme puts the t.me link in the code instead.
    let mut args = args.to_vec();
    args.extend(["--format", "tme"]);
    ok(link(state.path(), &args));
    assert_eq!(read_png(&png), vec![tme.clone()]);
    assert_eq!(read_svg(&svg), vec![tme.clone()]);
}

#[test]
fn several_links_get_one_file_each() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("qr.png");
    let stdout = ok(link(
        state.path(),
        &[
            "--secret",
            KEY1,
            "--secret",
            KEY2,
            "--modes",
            "ee,dd",
            "--domain",
            "a.example",
            "--listen",
            "10.0.0.1:443",
            "--base64",
            "--qr-png",
            png.to_str().unwrap(),
        ],
    ));
    let b = blocks(&stdout);
    assert_eq!(b.len(), 4, "{stdout}");
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "qr-user1-dd.png",
            "qr-user1-ee-a.example.png",
            "qr-user1-samizdat.png",
            "qr-user2-dd.png",
            "qr-user2-ee-a.example.png",
            "qr-user2-samizdat.png"
        ]
    );
    // Each user's samizdat:// link, for `samizdat client`, and its QR code.
    let sz = samizdat_blocks(&stdout);
    assert_eq!(sz.len(), 2, "{stdout}");
    for (user, text) in &sz {
        let parsed = wire::link::Link::parse(text).expect("the samizdat link parses");
        assert_eq!(parsed.servers[0].to_string(), "10.0.0.1:443");
        assert_eq!(parsed.sni, "a.example");
        let f = dir.path().join(format!("qr-{user}-samizdat.png"));
        assert_eq!(read_png(&f), vec![text.clone()], "{}", f.display());
    }
    assert_ne!(sz[0].1, sz[1].1, "each user has their own link");
    for (user, label, tg, _) in &b {
        assert_eq!(parse_link(tg).0, "10.0.0.1", "the --listen address");
        let form = if label.starts_with("ee") {
            "ee-a.example"
        } else {
            "dd"
        };
        let f = dir.path().join(format!("qr-{user}-{form}.png"));
        assert!(
            stdout.contains(&format!("QR code: {}", f.display())),
            "{stdout}"
        );
        assert_eq!(read_png(&f), vec![tg.clone()], "{}", f.display());
    }
}

#[test]
fn terminal_qr_reads_back_into_the_link() {
    let state = tempfile::tempdir().unwrap();
    let stdout = ok(link(
        state.path(),
        &[
            "--secret",
            KEY1,
            "--modes",
            "ee,plain",
            "--public-host",
            "proxy.example.org",
            "--qr",
        ],
    ));
    assert!(!stdout.contains('\x1b'), "no colours when not a terminal");
    let lines: Vec<&str> = stdout.lines().collect();
    let b = blocks(&stdout);
    assert_eq!(b.len(), 2, "{stdout}");
    let mut found = 0;
    for (i, l) in lines.iter().enumerate() {
        if !l.starts_with("user ") || l.ends_with("(samizdat client):") {
            continue;
        }
        // The code follows the two links, up to a blank line.
        let art: Vec<Vec<char>> = lines[i + 3..]
            .iter()
            .take_while(|l| !l.is_empty())
            .map(|l| l.chars().collect())
            .collect();
        assert!(art.len() > 10, "{stdout}");
        // Half blocks: each character is two modules; drawn parts are light.
        let (w, h) = (art[0].len(), art.len() * 2);
        let light = |x: usize, y: usize| match art[y / 2][x] {
            '█' => true,
            '▀' => y % 2 == 0,
            '▄' => y % 2 == 1,
            ' ' => false,
            c => panic!("unexpected {c:?} in the QR code"),
        };
        // Scale up so the detector has several pixels per module.
        let s = 4;
        let text = read_qr(w * s, h * s, |x, y| !light(x / s, y / s));
        assert_eq!(text, vec![b[found].2.clone()]);
        found += 1;
    }
    assert_eq!(found, 2);
}
