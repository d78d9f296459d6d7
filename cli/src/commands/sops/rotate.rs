//! `sealkit sops rotate`: a new data key and new IVs, optionally for other age recipients.

use std::path::Path;

use sealkit_keys::sops::encrypt;

use super::{display_name, open_plain, sops_err, write_out};
use crate::args::{OutputFlags, SopsCommon};
use crate::error::CliError;

pub(super) fn rotate_cmd(
    file: &Path,
    add: &[String],
    rm: &[String],
    out: &OutputFlags,
    common: &SopsCommon,
) -> Result<(), CliError> {
    let name = display_name(file, common);
    let (ef, format, _key, plain) = open_plain(file, common, &name, false)?;
    let mut opts = ef.options();
    if !add.is_empty() || !rm.is_empty() {
        if !opts.key_groups.is_empty() {
            return Err(CliError::usage(
                "--add-age/--rm-age work on files with one key group",
            ));
        }
        opts.age.retain(|r| !rm.contains(r));
        for a in add {
            if !opts.age.contains(a) {
                opts.age.push(a.clone());
            }
        }
    }
    let text = encrypt(&plain, format, &opts).map_err(|e| sops_err(&name, e))?;
    write_out(file, out, text.as_bytes(), false)
}
