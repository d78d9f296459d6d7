use super::*;

#[test]
fn debug_never_shows_values() {
    let l = Leaf {
        path: vec!["pw".into()],
        value: Scalar::Str("hunter2".into()),
        comment: false,
        comments: vec![],
    };
    let p = Plain::Str(Zeroizing::new("hunter2".into()), "str");
    let shown = format!("{l:?} {p:?} {:?}", Scalar::Int(424242));
    assert!(
        !shown.contains("hunter2") && !shown.contains("424242"),
        "{shown}"
    );
    assert!(shown.contains("pw"));
}

#[test]
fn mac_comparison() {
    let mut mac = Mac::new(false);
    mac.update(b"value");
    let computed = mac.finish();
    assert_eq!(computed.len(), 128);
    // Equal, in either case (older sops versions wrote lower case).
    assert!(mac_matches(computed.as_bytes(), &computed));
    assert!(mac_matches(
        computed.to_ascii_lowercase().as_bytes(),
        &computed
    ));
    // A different MAC, one digit changed at the start or at the end.
    let mut other = computed.clone().into_bytes();
    other[0] = if other[0] == b'0' { b'1' } else { b'0' };
    assert!(!mac_matches(&other, &computed));
    let mut other = computed.clone().into_bytes();
    other[127] = if other[127] == b'0' { b'1' } else { b'0' };
    assert!(!mac_matches(&other, &computed));
    // Different lengths: a prefix, an extension, nothing.
    assert!(!mac_matches(&computed.as_bytes()[..64], &computed));
    assert!(!mac_matches(format!("{computed}00").as_bytes(), &computed));
    assert!(!mac_matches(b"", &computed));
}

#[test]
fn float_format_matches_go() {
    assert_eq!(format_float(1234567890.0_f32 as f64), "1234567936");
    assert_eq!(format_float(1234568000.0), "1234568000");
    assert_eq!(format_float(0.1), "0.1");
    assert_eq!(format_float(1e-7), "0.0000001");
    assert_eq!(format_float(3.0), "3");
    assert_eq!(format_float(-2.5), "-2.5");
}

#[test]
fn aad_joins_map_keys() {
    let l = Leaf {
        path: vec!["app2".into(), "db".into(), "password".into()],
        value: Scalar::Null,
        comment: false,
        comments: Vec::new(),
    };
    assert_eq!(l.aad(), "app2:db:password:");
    let top = Leaf {
        path: vec![],
        value: Scalar::Null,
        comment: true,
        comments: Vec::new(),
    };
    assert_eq!(top.aad(), ":");
}

#[test]
fn rules() {
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(!Rule::default().encrypts(&p(&["a_unencrypted", "b"])));
    assert!(Rule::default().encrypts(&p(&["a", "b"])));
    let r = Rule::EncryptedRegex(Regex::new("^(data|stringData)$").expect("re"));
    assert!(r.encrypts(&p(&["stringData", "password"])));
    assert!(!r.encrypts(&p(&["metadata", "name"])));
}

#[test]
fn encrypt_then_decrypt_with_fake_tree() {
    let key = DataKey::generate().expect("key");
    let leaves = vec![
        Leaf {
            path: vec!["a".into()],
            value: Scalar::Str("secret".into()),
            comment: false,
            comments: Vec::new(),
        },
        Leaf {
            path: vec!["n".into()],
            value: Scalar::Int(5),
            comment: false,
            comments: Vec::new(),
        },
        Leaf {
            path: vec![],
            value: Scalar::Str(" a comment".into()),
            comment: true,
            comments: Vec::new(),
        },
        Leaf {
            path: vec!["x_unencrypted".into()],
            value: Scalar::Bool(true),
            comment: false,
            comments: Vec::new(),
        },
    ];
    let enc = encrypt_leaves(&leaves, &key, &Rule::default(), false, None).expect("enc");
    assert!(enc.values[3].is_none());
    let sealed: Vec<Leaf> = leaves
        .iter()
        .zip(&enc.values)
        .map(|(l, v)| Leaf {
            value: v.clone().map_or(l.value.clone(), Scalar::Str),
            ..l.clone()
        })
        .collect();
    let dec = decrypt_leaves(&sealed, &key, &Rule::default(), false).expect("dec");
    assert_eq!(dec.mac, enc.mac);
    assert!(matches!(&dec.values[1], Some(Plain::Int(5))));
    // A value moved to another key no longer opens (the AAD binds the path).
    let mut moved = sealed.clone();
    moved[0].path = vec!["b".into()];
    assert!(decrypt_leaves(&moved, &key, &Rule::default(), false).is_err());
}
