//! Compiles the library's list of behaviour switches and profiles
//! (python/asyncbis/switches.toml, the file asyncbis.switches reads) into Rust constants, so the
//! tool and the library cannot disagree. A malformed list fails the build, saying what is wrong.

use std::path::Path;

#[path = "src/switch_list.rs"]
mod switch_list;

const SOURCE: &str = "../../python/asyncbis/switches.toml";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=src/switch_list.rs");
    let text =
        std::fs::read_to_string(SOURCE).unwrap_or_else(|err| panic!("cannot read {SOURCE}: {err}"));
    let code = switch_list::generate(&text).unwrap_or_else(|err| panic!("{SOURCE}: {err}"));
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("switches.rs");
    std::fs::write(&out, code).unwrap_or_else(|err| panic!("cannot write {out:?}: {err}"));
}
