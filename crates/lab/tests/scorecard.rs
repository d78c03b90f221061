//! The scorecard end to end: every subject × every technique on loopback,
//! with the cells today's censors are known to produce asserted.

use lab::scorecard::{
    self, Outcome, ScorecardOptions, Subject, NO_CENSOR, ONE_BY_ONE, PREFIX, PROBING,
};

fn word(card: &scorecard::Scorecard, s: Subject, c: &str) -> &'static str {
    card.get(s, c)
        .unwrap_or_else(|| panic!("no cell {} × {c}", s.name()))
        .word()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scorecard_matches_what_censors_do_today() {
    let bin = scorecard::samizdat_bin().unwrap_or_else(|e| panic!("{e}"));
    let opts = ScorecardOptions::new(bin);
    let card = scorecard::run(&opts, &Subject::ALL, &scorecard::default_columns())
        .await
        .expect("the scorecard runs");
    println!("{}", card.table());
    let out = std::env::temp_dir().join(format!("samizdat-lab-scorecard-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("lab-report.md"), card.markdown()).unwrap();
    std::fs::write(out.join("lab-heatmap.svg"), card.svg()).unwrap();
    eprintln!("{}", card.markdown());

    // "through": survived or degraded. Throughputs are noisy with every
    // cell running at once, so only the throttled cells must be degraded.
    let mut wrong = Vec::new();
    let mut expect = |s: Subject, c: &str, want: &str| {
        let got = word(&card, s, c);
        let ok = match want {
            "through" => got != "blocked",
            w => got == w,
        };
        if !ok {
            wrong.push(format!(
                "{} × {c}: expected {want}, got {}",
                s.name(),
                card.get(s, c).map(Outcome::text).unwrap_or_default()
            ));
        }
    };
    for s in Subject::ALL {
        expect(s, NO_CENSOR, "survived");
        // Nobody here is at a Telegram address.
        expect(s, "IP block (Telegram)", "through");
    }
    // The official apps' hello has a JA4 on the blocklist; samizdat's own
    // post-quantum hello has one extension fewer and another JA4.
    expect(Subject::EeApps, "JA3/JA4", "blocked");
    expect(Subject::Ee, "JA3/JA4", "through");
    // Fake-TLS is TLS: FET and the allowlist let it through; the bare
    // obfuscated2 forms look fully encrypted and are no allowed protocol.
    for s in [Subject::EeApps, Subject::Ee] {
        expect(s, "FET", "through");
        expect(s, "protocol allowlist", "through");
        // Only TLS flows are frozen.
        expect(s, "16 KiB freeze", "blocked");
        // The throttled name is the cover's, which only ee clients send.
        expect(s, "SNI throttle", "degraded");
    }
    for s in [Subject::Dd, Subject::Plain] {
        expect(s, "FET", "blocked");
        expect(s, "protocol allowlist", "blocked");
        expect(s, "16 KiB freeze", "through");
        expect(s, "SNI throttle", "through");
    }
    expect(Subject::Socks5, "FET", "through");
    expect(Subject::Socks5, "protocol allowlist", "blocked");
    expect(Subject::Socks5, "SNI throttle", "through");
    // samizdat is its cover to an active prober; a SOCKS5 server is not
    // a web server.
    for s in [Subject::EeApps, Subject::Ee, Subject::Dd, Subject::Plain] {
        expect(s, PROBING, "survived");
    }
    expect(Subject::Socks5, PROBING, "blocked");
    // samizdat client with four endpoints of one server: after each
    // block its streams go on over the next endpoint.
    expect(Subject::Client, ONE_BY_ONE, "through");
    expect(Subject::Client, PREFIX, "through");
    // Its hello is TLS to a foreign hoster, frozen like any other; it
    // learns the freeze and spreads its sessions over connections.
    expect(Subject::Client, "16 KiB freeze", "through");
    expect(Subject::Client, "FET", "through");
    expect(Subject::Client, "protocol allowlist", "through");
    assert!(
        wrong.is_empty(),
        "unexpected cells:\n  {}\n{}",
        wrong.join("\n  "),
        card.table()
    );
    assert!(
        card.elapsed.as_secs() < 60,
        "the scorecard took {:?}",
        card.elapsed
    );
    let svg = card.svg();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // The endpoint-pool columns are the client's alone, and it is not
    // probed (its server is the `ee` rows' server).
    let columns = scorecard::default_columns().len();
    let others = Subject::ALL.len() - 1;
    assert_eq!(card.cells.len(), others * (columns - 2) + (columns - 1));
    assert_eq!(svg.matches("<rect x=").count(), card.cells.len());
    assert!(card.get(Subject::Client, PROBING).is_none());
    assert!(card.get(Subject::Socks5, ONE_BY_ONE).is_none());
}
