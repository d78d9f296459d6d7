//! CLI goldens: every `tests/cmd/*.toml` runs the `sealkit` binary and pins its exact stdout
//! (`NAME.stdout`), stderr (`NAME.stderr`) and exit status; `...` and `[..]` in a golden stand
//! for output that is random (ciphertexts). Cases run in `tests/cmd/fixtures` (or a sandbox
//! copy of it, where a case writes files) with an empty environment plus what the case sets,
//! so nothing from the developer's shell (KUBECONFIG, SOPS_AGE_*, SEALED_SECRETS_*, HOME,
//! COLUMNS) leaks into the output.
//!
//! After a deliberate change of wording: `TRYCMD=overwrite cargo test -p sealkit-tests --test
//! cli_golden`, then read every changed golden before committing it.

#[test]
fn cli_goldens() {
    trycmd::TestCases::new()
        .register_bin("sealkit", sealkit_tests::sealkit_bin())
        .case("cmd/*.toml");
}
