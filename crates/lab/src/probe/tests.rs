use super::*;

#[test]
fn catalogue_has_the_wild_lengths_and_the_replay_changes() {
    let recorded = vec![vec![0xaa; 100]];
    let opts = ProbeOptions {
        replay_delays: vec![Duration::ZERO, Duration::from_millis(10)],
        ..ProbeOptions::default()
    };
    let c = catalogue(&recorded, &opts);
    for &n in WILD_LENGTHS {
        assert!(c.iter().any(|p| p.name == format!("random {n} bytes")));
    }
    let flipped = c
        .iter()
        .find(|p| p.name == "replay 0, bytes 0-7 and 62-63 changed")
        .unwrap();
    let Step::Send(b) = &flipped.steps[0] else {
        panic!("{flipped:?}")
    };
    let diff: Vec<usize> = (0..100).filter(|&i| b[i] != 0xaa).collect();
    assert_eq!(diff, vec![0, 1, 2, 3, 4, 5, 6, 7, 62, 63]);
    assert!(c.iter().any(|p| p.name == "replay 0, identical, after 10ms"
        && p.steps[0] == Step::Pause(Duration::from_millis(10))));
    assert_eq!(c, catalogue(&recorded, &opts), "deterministic per seed");
}

#[test]
fn identical_observations_do_not_differ_and_close_kinds_do() {
    let o = Observation {
        data: "nothing".into(),
        notes: String::new(),
        first_byte: None,
        end: End::Fin,
        end_at: Some(Duration::from_millis(100)),
        after_fin: Some("reset"),
    };
    assert!(differences(&o, &o, Duration::from_millis(500)).is_empty());
    let rst = Observation {
        end: End::Rst,
        after_fin: None,
        ..o.clone()
    };
    assert_eq!(differences(&o, &rst, Duration::from_millis(500)).len(), 2);
    let late = Observation {
        end_at: Some(Duration::from_secs(2)),
        ..o.clone()
    };
    assert_eq!(differences(&o, &late, Duration::from_millis(500)).len(), 1);
    let refused = Observation {
        notes: "step 1 failed: ConnectionReset; ".into(),
        ..o.clone()
    };
    assert_eq!(
        differences(&o, &refused, Duration::from_millis(500)).len(),
        1
    );
}

#[test]
fn range_stays_inside_its_bounds() {
    let mut rng = Rng::new(7);
    let got: Vec<usize> = (0..1000).map(|_| rng.range(3, 5)).collect();
    assert!(got.iter().all(|n| (3..=5).contains(n)));
    assert!([3, 4, 5].iter().all(|n| got.contains(n)));
    assert_eq!(rng.range(9, 9), 9);
}
