//! `memit`'s bad options are errors naming them. (Its known answer on the organism, a hundred
//! cities at once, is `recipes/memit-edit.toml`'s in `recipes.rs`; its batches shard and merge
//! in `sweeps.rs`.)

use crate::{s, xtask};

#[test]
fn bad_memit_options_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let o = s(&tmp.path().join("o")).to_string();
    xtask(&["memit", "--layers", "7", "--cases", "2", "--out", &o]).fails_naming(&[
        "--layers",
        "layer 7 is out of range",
        "4 layers",
    ]);
    xtask(&["memit", "--layers", "3-1", "--out", &o]).fails_naming(&["--layers", "ascending"]);
    xtask(&["memit", "--mom2-update-weight", "0", "--out", &o])
        .fails_naming(&["--mom2-update-weight"]);
    xtask(&["memit", "--relation", "colour", "--cases", "2", "--out", &o])
        .fails_naming(&["colour", "city, job, instrument"]);
    xtask(&["memit", "--cases", "241", "--out", &o]).fails_naming(&["241", "240 people"]);
}
