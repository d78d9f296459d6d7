//! The SOPS dotenv store: load a file, decrypt it with the example age identity, emit it again;
//! or encrypt it as a plaintext file and decrypt that. The invariants are those of
//! [`sealkit_keys_fuzz::store_target`].
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkit_keys::sops::FileFormat;

fuzz_target!(|data: &[u8]| sealkit_keys_fuzz::store_target(data, FileFormat::Dotenv));
