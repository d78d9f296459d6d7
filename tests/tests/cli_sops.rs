//! `sealkit sops` as a user drives it: .sops.yaml rules, in-place writes, edit with minimal
//! diffs, set/unset, rotate, updatekeys (--check), exec-env/exec-file, check, and bad input.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use sealkit_tests::{ok, run, sealkit_bin};

struct Env {
    dir: tempfile::TempDir,
    key: String,
    recipient: String,
}

fn keygen(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join(name);
    ok(&run(Command::new("age-keygen").arg("-o").arg(&key), b""));
    let r = String::from_utf8(ok(&run(
        Command::new("age-keygen").arg("-y").arg(&key),
        b"",
    )))
    .expect("utf8");
    (key.display().to_string(), r.trim().to_string())
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let (key, recipient) = keygen(dir.path(), "key.txt");
        Env {
            dir,
            key,
            recipient,
        }
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.dir.path().join(p)
    }

    fn write(&self, p: &str, text: &str) {
        let path = self.path(p);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, text).expect("write");
    }

    fn read(&self, p: &str) -> String {
        fs::read_to_string(self.path(p)).expect("read")
    }

    fn sops(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(sealkit_bin());
        cmd.arg("sops")
            .args(args)
            .current_dir(self.dir.path())
            .env("SOPS_AGE_KEY_FILE", &self.key)
            .env("XDG_CONFIG_HOME", self.path("xdg"))
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_RECIPIENTS")
            .env_remove("SOPS_CONFIG");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        run(&mut cmd, b"")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fails(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_ne!(o.status.code(), Some(0), "should fail:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
}

const SECRET: &str = "# app secret\napiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n  user: admin\n";

#[test]
fn creation_rules_in_place_and_decrypt() {
    let e = Env::new();
    e.write(
        ".sops.yaml",
        &format!("creation_rules:\n  - path_regex: secrets/.*\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: {}\n", e.recipient),
    );
    e.write("secrets/db.yaml", SECRET);
    ok(&e.sops(&["encrypt", "-i", "secrets/db.yaml"], &[]));
    let enc = e.read("secrets/db.yaml");
    assert!(
        enc.contains("name: db") && !enc.contains("hunter2"),
        "{enc}"
    );
    assert!(enc.contains("encrypted_regex: ^(data|stringData)$"));
    let out = String::from_utf8(ok(&e.sops(&["decrypt", "secrets/db.yaml"], &[]))).expect("utf8");
    assert_eq!(out, SECRET);
    // Encrypting twice is refused and leaves the file as it was.
    fails(
        &e.sops(&["encrypt", "-i", "secrets/db.yaml"], &[]),
        &["already encrypted"],
    );
    assert_eq!(e.read("secrets/db.yaml"), enc);
    // A file no rule covers and no --age: a usage error with a hint.
    e.write("other.yaml", "a: b\n");
    fails(
        &e.sops(&["encrypt", "other.yaml"], &[]),
        &["no age recipients", "--age"],
    );
    // JSON output conversion and --extract.
    let json = ok(&e.sops(
        &["decrypt", "--output-type", "json", "secrets/db.yaml"],
        &[],
    ));
    let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
    assert_eq!(v["stringData"]["user"], "admin");
    let pw = ok(&e.sops(
        &[
            "decrypt",
            "--extract",
            "[\"stringData\"][\"password\"]",
            "secrets/db.yaml",
        ],
        &[],
    ));
    assert_eq!(pw, b"hunter2");
    // --output writes a new plaintext file with mode 0600.
    ok(&e.sops(
        &["decrypt", "--output", "plain.yaml", "secrets/db.yaml"],
        &[],
    ));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(e.path("plain.yaml"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn edit_keeps_unchanged_ciphertext_and_refuses_broken_files() {
    let e = Env::new();
    e.write("s.yaml", SECRET);
    ok(&e.sops(&["encrypt", "-i", "--age", &e.recipient, "s.yaml"], &[]));
    let before = e.read("s.yaml");
    e.write(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/hunter2/new-password/' \"$1\"\n",
    );
    ok(&run(
        Command::new("chmod").args(["+x"]).arg(e.path("editor.sh")),
        b"",
    ));
    let editor = e.path("editor.sh").display().to_string();
    ok(&e.sops(&["edit", "s.yaml"], &[("EDITOR", &editor)]));
    let after = e.read("s.yaml");
    let line = |t: &str, k: &str| {
        t.lines()
            .find(|l| l.trim_start().starts_with(k))
            .map(str::to_string)
    };
    assert_eq!(
        line(&before, "user:"),
        line(&after, "user:"),
        "unchanged value keeps its ciphertext"
    );
    assert_ne!(line(&before, "password:"), line(&after, "password:"));
    let out = String::from_utf8(ok(&e.sops(&["decrypt", "s.yaml"], &[]))).expect("utf8");
    assert!(out.contains("password: new-password") && out.contains("# app secret"));

    // An edit that breaks the YAML is not saved.
    e.write("break.sh", "#!/bin/sh\nprintf 'a: [unclosed\\n' > \"$1\"\n");
    ok(&run(
        Command::new("chmod").args(["+x"]).arg(e.path("break.sh")),
        b"",
    ));
    let breaker = e.path("break.sh").display().to_string();
    fails(
        &e.sops(&["edit", "s.yaml"], &[("EDITOR", &breaker)]),
        &["cannot be encrypted", "not changed"],
    );
    assert_eq!(e.read("s.yaml"), after);
}

#[test]
fn set_unset_rotate_and_exec() {
    let e = Env::new();
    e.write(
        "s.json",
        "{\"db\": {\"password\": \"hunter2\", \"user\": \"admin\"}}",
    );
    ok(&e.sops(&["encrypt", "-i", "--age", &e.recipient, "s.json"], &[]));
    ok(&e.sops(&["set", "s.json", "[\"db\"][\"port\"]", "5432"], &[]));
    ok(&e.sops(&["unset", "s.json", "[\"db\"][\"user\"]"], &[]));
    let v: serde_json::Value =
        serde_json::from_slice(&ok(&e.sops(&["decrypt", "s.json"], &[]))).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"db": {"password": "hunter2", "port": 5432}})
    );
    fails(
        &e.sops(&["set", "s.json", "[\"db\"]", "not json"], &[]),
        &["must be JSON"],
    );

    // rotate --add-age: a new data key, readable by both identities.
    let (key2, r2) = keygen(e.dir.path(), "key2.txt");
    let before = e.read("s.json");
    ok(&e.sops(&["rotate", "-i", "--add-age", &r2, "s.json"], &[]));
    let after = e.read("s.json");
    assert_ne!(before, after);
    ok(&e.sops(&["decrypt", "s.json"], &[("SOPS_AGE_KEY_FILE", &key2)]));
    ok(&e.sops(&["rotate", "-i", "--rm-age", &r2, "s.json"], &[]));
    fails(
        &e.sops(&["decrypt", "s.json"], &[("SOPS_AGE_KEY_FILE", &key2)]),
        &["no identity can decrypt"],
    );

    // exec-env and exec-file.
    e.write("env.yaml", "DB_PASSWORD: hunter2\n");
    ok(&e.sops(&["encrypt", "-i", "--age", &e.recipient, "env.yaml"], &[]));
    let out = ok(&e.sops(&["exec-env", "env.yaml", "printf %s \"$DB_PASSWORD\""], &[]));
    assert_eq!(out, b"hunter2");
    let out =
        String::from_utf8(ok(&e.sops(&["exec-file", "env.yaml", "cat {}"], &[]))).expect("utf8");
    assert_eq!(out, "DB_PASSWORD: hunter2\n");
    let o = e.sops(&["exec-env", "env.yaml", "exit 7"], &[]);
    assert_eq!(
        o.status.code(),
        Some(7),
        "the command's exit code is passed on"
    );
}

#[test]
fn updatekeys_and_check() {
    let e = Env::new();
    let (_, r2) = keygen(e.dir.path(), "key2.txt");
    e.write(
        ".sops.yaml",
        &format!(
            "creation_rules:\n  - path_regex: secrets/\n    age: {}\n",
            e.recipient
        ),
    );
    e.write("secrets/a.yaml", "token: abc\n");
    e.write("secrets/b.yaml", "token: def\n");
    e.write(
        "apps/plain-secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: leak}\nstringData: {pw: hunter2}\n",
    );
    e.write(
        "apps/config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
    );
    // check: one file should be encrypted, one Secret is in clear.
    let o = e.sops(&["check", "."], &[]);
    assert_eq!(o.status.code(), Some(1));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        listed.contains("secrets/a.yaml: must be encrypted")
            && listed.contains("Secret 'leak' in clear"),
        "{listed}"
    );
    assert!(!listed.contains("config.yaml"), "{listed}");
    ok(&e.sops(&["encrypt", "-i", "secrets/a.yaml"], &[]));
    ok(&e.sops(&["encrypt", "-i", "secrets/b.yaml"], &[]));
    fs::remove_file(e.path("apps/plain-secret.yaml")).expect("rm");
    ok(&e.sops(&["check", "."], &[]));

    // The rule gains a recipient: --check lists both files, then -y updates them.
    e.write(
        ".sops.yaml",
        &format!(
            "creation_rules:\n  - path_regex: secrets/\n    age: {},{}\n",
            e.recipient, r2
        ),
    );
    let o = e.sops(&["updatekeys", "--check", "secrets"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    let value_line = e.read("secrets/a.yaml").lines().next().map(str::to_string);
    ok(&e.sops(&["updatekeys", "-y", "secrets"], &[]));
    assert_eq!(
        e.read("secrets/a.yaml").lines().next().map(str::to_string),
        value_line,
        "values untouched"
    );
    ok(&e.sops(&["updatekeys", "--check", "secrets"], &[]));
    ok(&e.sops(
        &["decrypt", "secrets/a.yaml"],
        &[(
            "SOPS_AGE_KEY_FILE",
            &e.path("key2.txt").display().to_string(),
        )],
    ));
}

#[test]
fn bad_input_is_named() {
    let e = Env::new();
    e.write("s.yaml", "app:\n  db:\n    password: hunter2\n");
    ok(&e.sops(&["encrypt", "-i", "--age", &e.recipient, "s.yaml"], &[]));
    let enc = e.read("s.yaml");
    // A value moved to another key.
    e.write(
        "moved.yaml",
        &enc.replace("    password: ENC", "    passwd: ENC"),
    );
    fails(
        &e.sops(&["decrypt", "moved.yaml"], &[]),
        &["moved.yaml", "app.db.passwd", "authentication failed"],
    );
    // Malformed ENC[…].
    e.write("malformed.yaml", &enc.replace(",iv:", ",iiv:"));
    fails(
        &e.sops(&["decrypt", "malformed.yaml"], &[]),
        &["malformed encrypted value", "app.db.password"],
    );
    // Unknown metadata.
    e.write(
        "unknown.yaml",
        &enc.replace("sops:\n", "sops:\n    surprise: 1\n"),
    );
    fails(
        &e.sops(&["decrypt", "unknown.yaml"], &[]),
        &["unknown.yaml", "surprise"],
    );
    // Not a sops file, not UTF-8.
    e.write("plain.yaml", "a: b\n");
    fails(
        &e.sops(&["decrypt", "plain.yaml"], &[]),
        &["not encrypted with sops"],
    );
    fs::write(e.path("bin.yaml"), [0xff, 0xfe, 0x00]).expect("write");
    fails(
        &e.sops(&["decrypt", "bin.yaml"], &[]),
        &["bin.yaml", "not UTF-8"],
    );
    // PGP-only file (an upstream vector) names the key type.
    let vector = sealkit_tests::shared()
        .unwrap_or_default()
        .join("vectors/sops/pgp-functional-tests/format.enc.yaml");
    match fs::read_to_string(&vector) {
        Ok(text) => {
            e.write("pgp.yaml", &text);
            fails(
                &e.sops(&["decrypt", "pgp.yaml"], &[]),
                &["pgp", "not supported"],
            );
        }
        Err(err) => sealkit_skip::missing(
            "upstream SOPS vectors",
            format!("{}: {err} (set SEALKIT_SHARED)", vector.display()),
        ),
    }
    // A clear value edited by hand: the MAC says the file changed outside sops.
    e.write("c.yaml", "a: 1\nclear_unencrypted: x\n");
    ok(&e.sops(&["encrypt", "-i", "--age", &e.recipient, "c.yaml"], &[]));
    let c = e
        .read("c.yaml")
        .replace("clear_unencrypted: x", "clear_unencrypted: y");
    e.write("c.yaml", &c);
    fails(
        &e.sops(&["decrypt", "c.yaml"], &[]),
        &["MAC mismatch", "changed outside sops", "--ignore-mac"],
    );
    ok(&e.sops(&["decrypt", "--ignore-mac", "c.yaml"], &[]));
}

#[test]
fn comment_regex_rule_from_flag_and_config() {
    let e = Env::new();
    e.write(
        "app.yaml",
        "name: web\n# sops:enc\ntoken: t0ken\nreplicas: 2\n",
    );
    ok(&e.sops(
        &[
            "encrypt",
            "-i",
            "--age",
            &e.recipient,
            "--encrypted-comment-regex",
            "sops:enc",
            "app.yaml",
        ],
        &[],
    ));
    let enc = e.read("app.yaml");
    assert!(
        enc.contains("name: web")
            && enc.contains("replicas: 2")
            && enc.contains("# sops:enc")
            && !enc.contains("t0ken"),
        "{enc}"
    );
    assert_eq!(
        String::from_utf8(ok(&e.sops(&["decrypt", "app.yaml"], &[]))).expect("utf8"),
        "name: web\n# sops:enc\ntoken: t0ken\nreplicas: 2\n"
    );
    e.write(
        ".sops.yaml",
        &format!(
            "creation_rules:\n  - unencrypted_comment_regex: public\n    age: {}\n",
            e.recipient
        ),
    );
    e.write("b.yaml", "# public\nhost: db.example\npassword: pw\n");
    ok(&e.sops(&["encrypt", "-i", "b.yaml"], &[]));
    let b = e.read("b.yaml");
    assert!(
        b.contains("host: db.example") && !b.contains("password: pw"),
        "{b}"
    );
}

#[test]
fn indent_and_huge_files() {
    let e = Env::new();
    e.write("a.json", "{\"k\": {\"v\": \"x\"}}");
    let out = String::from_utf8(ok(&e.sops(
        &["encrypt", "--indent", "2", "--age", &e.recipient, "a.json"],
        &[],
    )))
    .expect("utf8");
    assert!(out.contains("\n  \"k\": {\n    \"v\": \"ENC["), "{out}");
    assert!(!out.contains('\t'));
    // A sparse 129 MiB file is refused before it is read.
    let f = fs::File::create(e.path("huge.yaml")).expect("create");
    f.set_len(129 << 20).expect("sparse");
    fails(
        &e.sops(&["encrypt", "--age", &e.recipient, "huge.yaml"], &[]),
        &["huge.yaml", "129 MiB", "up to 128 MiB"],
    );
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).expect("meta").permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(m)).expect("chmod");
}

fn script(e: &Env, name: &str, body: &str) -> String {
    e.write(name, &format!("#!/bin/sh\n{body}"));
    chmod(&e.path(name), 0o755);
    e.path(name).display().to_string()
}

/// Every path that puts plaintext on disk creates it 0600, also over an existing file whose
/// looser mode must not survive (`-i` on a 0644 file, `--output` onto a 0644 file).
#[test]
fn plaintext_files_are_written_0600() {
    let e = Env::new();
    e.write("s.yaml", SECRET);
    ok(&e.sops(&["encrypt", "-i", "--age", &e.recipient, "s.yaml"], &[]));
    let enc = e.read("s.yaml");
    chmod(&e.path("s.yaml"), 0o644);
    ok(&e.sops(&["decrypt", "-i", "s.yaml"], &[]));
    assert_eq!(e.read("s.yaml"), SECRET);
    assert_eq!(mode(&e.path("s.yaml")), 0o600, "decrypt -i");

    e.write("s2.yaml", &enc);
    e.write("out.yaml", "old\n");
    chmod(&e.path("out.yaml"), 0o644);
    ok(&e.sops(&["decrypt", "--output", "out.yaml", "s2.yaml"], &[]));
    assert_eq!(e.read("out.yaml"), SECRET);
    assert_eq!(
        mode(&e.path("out.yaml")),
        0o600,
        "decrypt --output onto a 0644 file"
    );
    ok(&e.sops(
        &[
            "decrypt",
            "--output-type",
            "json",
            "--output",
            "new.json",
            "s2.yaml",
        ],
        &[],
    ));
    assert_eq!(
        mode(&e.path("new.json")),
        0o600,
        "decrypt --output to a new file"
    );
    // No temporary files left next to the outputs.
    let stray: Vec<_> = fs::read_dir(e.dir.path())
        .expect("ls")
        .flatten()
        .filter(|d| d.file_name().to_string_lossy().starts_with(".sealkit-"))
        .collect();
    assert!(stray.is_empty(), "temporary files left behind");

    // The editor's and exec-file's temporary plaintexts: 0600, in a 0700 directory.
    let editor = script(
        &e,
        "stat-editor.sh",
        &format!(
            "stat -c %a \"$1\" \"$(dirname \"$1\")\" > {}\n",
            e.path("edit-modes").display()
        ),
    );
    ok(&e.sops(&["edit", "s2.yaml"], &[("EDITOR", &editor)]));
    assert_eq!(e.read("edit-modes"), "600\n700\n");
    let out = String::from_utf8(ok(&e.sops(
        &["exec-file", "s2.yaml", "stat -c %a {} \"$(dirname {})\""],
        &[],
    )))
    .expect("utf8");
    assert_eq!(out, "600\n700\n");
}

/// A process the test started, stopped by its id when the test ends (pass or fail).
struct Reaper(Option<String>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn wait_for_file(p: &Path) -> String {
    for _ in 0..600 {
        if let Ok(t) = fs::read_to_string(p)
            && t.ends_with('\n')
        {
            return t.trim_end().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} never appeared", p.display());
}

/// `edit` and `exec-file` hold plaintext in a temporary file while the editor or command runs;
/// a SIGTERM or SIGINT to sealkit then removes it (and its directory), leaves the encrypted
/// file as it was, stops the child and exits non-zero.
#[test]
fn temp_plaintext_removed_on_sigterm_and_sigint() {
    let e = Env::new();
    e.write("s.yaml", SECRET);
    ok(&e.sops(&["encrypt", "-i", "--age", &e.recipient, "s.yaml"], &[]));
    let enc = e.read("s.yaml");
    for (i, (signal, sub)) in [
        ("TERM", "edit"),
        ("INT", "edit"),
        ("TERM", "exec-file"),
        ("INT", "exec-file"),
    ]
    .into_iter()
    .enumerate()
    {
        let seen = e.path(format!("seen-{i}").as_str());
        let pidfile = e.path(format!("pid-{i}").as_str());
        // The child records the plaintext's path and its own pid, then waits to be stopped.
        let child = script(
            &e,
            &format!("child-{i}.sh"),
            &format!(
                "echo $$ > {}\nprintf '%s\\n' \"$1\" > {}\nexec sleep 60\n",
                pidfile.display(),
                seen.display()
            ),
        );
        let mut cmd = Command::new(sealkit_tests::sealkit_bin());
        cmd.arg("sops")
            .current_dir(e.dir.path())
            .env("SOPS_AGE_KEY_FILE", &e.key)
            .env("XDG_CONFIG_HOME", e.path("xdg"))
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if sub == "edit" {
            cmd.args(["edit", "s.yaml"]).env("EDITOR", &child);
        } else {
            cmd.args(["exec-file", "s.yaml", &format!("{child} {{}}")]);
        }
        let mut proc = cmd.spawn().expect("spawn sealkit");
        let mut sealkit = Reaper(Some(proc.id().to_string()));
        let tmp = std::path::PathBuf::from(wait_for_file(&seen));
        let _child = Reaper(Some(wait_for_file(&pidfile)));
        assert!(
            tmp.exists(),
            "{sub}: the plaintext exists while the child runs"
        );
        assert_eq!(fs::read_to_string(&tmp).expect("read tmp"), SECRET);
        ok(&run(
            Command::new("kill").args([format!("-{signal}"), proc.id().to_string()]),
            b"",
        ));
        let mut status = None;
        for _ in 0..400 {
            if let Some(s) = proc.try_wait().expect("wait") {
                // Reaped: its pid is no longer ours to signal.
                sealkit.0 = None;
                status = Some(s);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let status = status.unwrap_or_else(|| panic!("{sub}: sealkit did not exit on SIG{signal}"));
        assert!(!status.success(), "{sub}/SIG{signal}: exit status {status}");
        assert!(
            !tmp.exists(),
            "{sub}/SIG{signal}: the temporary plaintext {} is still there",
            tmp.display()
        );
        assert!(
            tmp.parent().is_none_or(|d| !d.exists()),
            "{sub}/SIG{signal}: the temporary directory is still there"
        );
        assert_eq!(e.read("s.yaml"), enc, "{sub}/SIG{signal}: the file changed");
    }
}

/// What the base64 crate's error text (and other echoes) would put into a message about a
/// value: none of it may reach stderr.
fn assert_no_echo(o: &Output, what: &str) {
    let err = stderr(o);
    assert_ne!(o.status.code(), Some(0), "{what}: should fail:\n{err}");
    for leak in [
        "MARKER", "symbol", "offset", "Invalid", "length", "padding", "found",
    ] {
        assert!(
            !err.contains(leak),
            "{what}: stderr contains {leak:?}:\n{err}"
        );
    }
}

/// Bad base64 (and other bad key material) in SOPS files, recipients and identities gives an
/// error naming where it is, never a byte of the value, its length or an offset into it.
#[test]
fn bad_base64_is_never_echoed() {
    let e = Env::new();
    e.write("s.yaml", "app:\n  password: hunter2\n");
    ok(&e.sops(&["encrypt", "-i", "--age", &e.recipient, "s.yaml"], &[]));
    let enc = e.read("s.yaml");
    let line = enc
        .lines()
        .find(|l| l.contains("password: ENC["))
        .expect("enc line")
        .to_string();
    let field = |name: &str| {
        let start = line.find(&format!("{name}:")).expect("field") + name.len() + 1;
        let end = start + line[start..].find([',', ']']).expect("end");
        line[start..end].to_string()
    };
    // data, iv and tag that are not base64; an iv and a tag of the wrong length.
    for (i, (name, bad)) in [
        ("data", "aGVsbG8~MARKER~"),
        ("iv", "~MARKER~AAAA"),
        ("tag", "MARKER=="),
        ("iv", "AAAAAAAAAAAAAAAA"),
        ("tag", "AAAA"),
    ]
    .into_iter()
    .enumerate()
    {
        let broken = enc.replace(&format!("{name}:{}", field(name)), &format!("{name}:{bad}"));
        assert_ne!(broken, enc);
        let f = format!("b64-{i}.yaml");
        e.write(&f, &broken);
        let o = e.sops(&["decrypt", &f], &[]);
        assert_no_echo(&o, &format!("ENC {name} {bad}"));
        fails(&o, &[&f, "app.password", "malformed encrypted value", name]);
    }
    // The age envelope of the data key.
    let begin = enc
        .lines()
        .find(|l| l.trim_start() == "-----BEGIN AGE ENCRYPTED FILE-----")
        .expect("armor");
    let indent = &begin[..begin.len() - begin.trim_start().len()];
    let broken = enc.replacen(
        &format!("{begin}\n"),
        &format!("{begin}\n{indent}~MARKER~\n"),
        1,
    );
    assert_ne!(broken, enc);
    e.write("armor.yaml", &broken);
    assert_no_echo(&e.sops(&["decrypt", "armor.yaml"], &[]), "age armor");

    // Recipients: an ssh-ed25519 key whose key data is not base64, and an age identity (a
    // secret key) given where a recipient belongs.
    e.write("p.yaml", "a: b\n");
    let o = e.sops(
        &[
            "encrypt",
            "--age",
            "ssh-ed25519 AAAAC3Nz~MARKER~ me@host",
            "p.yaml",
        ],
        &[],
    );
    assert_no_echo(&o, "ssh recipient");
    fails(&o, &["ssh-ed25519"]);
    let secret_key = fs::read_to_string(&e.key)
        .expect("key")
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .expect("secret key line")
        .to_string();
    let o = e.sops(&["encrypt", "--age", &secret_key, "p.yaml"], &[]);
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        !err.contains(&secret_key),
        "the secret key is echoed:\n{err}"
    );
    assert!(
        !err.contains(&secret_key[20..40]),
        "part of the secret key is echoed:\n{err}"
    );
    // An SSH private key whose body is not base64.
    e.write(
        "id_ed25519",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA~MARKER~\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    let o = e.sops(
        &["decrypt", "s.yaml"],
        &[
            ("SOPS_AGE_KEY_FILE", ""),
            (
                "SOPS_AGE_SSH_PRIVATE_KEY_FILE",
                &e.path("id_ed25519").display().to_string(),
            ),
        ],
    );
    assert_no_echo(&o, "ssh private key");
}

/// A document nested 100,000 levels deep: a clear error naming the file, never a stack
/// overflow (run through the real binary, where an overflow is a SIGSEGV/SIGABRT).
#[test]
fn deeply_nested_files_are_refused() {
    let e = Env::new();
    const N: usize = 100_000;
    let deep = [
        (
            "meta.env",
            format!("A=1\nsops_version{}=x\n", "__list_0".repeat(N)),
        ),
        (
            "meta.ini",
            format!("[s]\na = 1\n[sops]\nversion{} = x\n", "__map_a".repeat(N)),
        ),
        (
            "flow.yaml",
            format!("a: {}1{}\n", "[".repeat(N), "]".repeat(N)),
        ),
        (
            "map.yaml",
            format!("a: {}1{}\n", "{a: ".repeat(N), "}".repeat(N)),
        ),
        ("block.yaml", format!("a:\n{}x\n", "- ".repeat(N))),
        (
            "deep.json",
            format!("{{\"a\": {}1{}}}", "[".repeat(N), "]".repeat(N)),
        ),
    ];
    let editor = script(&e, "noop.sh", "exit 0\n");
    for (name, text) in &deep {
        e.write(name, text);
        let mut runs: Vec<Vec<&str>> = vec![
            vec!["decrypt", name],
            vec!["edit", name],
            vec!["set", name, "[\"a\"]", "1"],
            vec!["exec-file", name, "true"],
            vec!["filestatus", name],
        ];
        runs.push(vec!["encrypt", "--age", &e.recipient, name]);
        for args in runs {
            let o = e.sops(&args, &[("EDITOR", &editor)]);
            let err = stderr(&o);
            assert!(
                o.status.code().is_some(),
                "{args:?}: killed by a signal ({}):\n{err}",
                o.status
            );
            fails(&o, &[name, "nested deeper than"]);
            assert_eq!(&e.read(name), text, "{args:?}: the file changed");
        }
        // `check` names the file instead of skipping it.
        let o = e.sops(&["check", name], &[]);
        assert!(o.status.code().is_some(), "check: {}", o.status);
        assert_ne!(o.status.code(), Some(0));
        let out = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
        assert!(
            out.contains(name) && out.contains("nested deeper than"),
            "check {name}:\n{out}"
        );
    }
    // An edit that produces a deeply nested file is refused; the file stays as it was.
    e.write("ok.yaml", "a: b\n");
    ok(&e.sops(&["encrypt", "-i", "--age", &e.recipient, "ok.yaml"], &[]));
    let before = e.read("ok.yaml");
    let deepen = script(
        &e,
        "deepen.sh",
        &format!(
            "printf 'a: %s1%s\\n' '{}' '{}' > \"$1\"\n",
            "[".repeat(N),
            "]".repeat(N)
        ),
    );
    let o = e.sops(&["edit", "ok.yaml"], &[("EDITOR", &deepen)]);
    assert!(o.status.code().is_some(), "edit: {}", o.status);
    fails(&o, &["ok.yaml", "nested deeper than", "not changed"]);
    assert_eq!(e.read("ok.yaml"), before);
    // Nesting up to the limit is fine.
    e.write(
        "sixty.yaml",
        &format!("a: {}1{}\n", "[".repeat(60), "]".repeat(60)),
    );
    ok(&e.sops(&["encrypt", "-i", "--age", &e.recipient, "sixty.yaml"], &[]));
    ok(&e.sops(&["decrypt", "sixty.yaml"], &[]));
}
