//! Compiles the library's list of behaviour switches and profiles
//! (python/asyncbis/switches.toml, the file asyncbis.switches reads) into Rust constants, so the
//! tool and the library cannot disagree. A malformed list fails the build, saying what is wrong.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

const SOURCE: &str = "../../python/asyncbis/switches.toml";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    let text =
        std::fs::read_to_string(SOURCE).unwrap_or_else(|err| panic!("cannot read {SOURCE}: {err}"));
    let code = generate(&text).unwrap_or_else(|err| panic!("{SOURCE}: {err}"));
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("switches.rs");
    std::fs::write(&out, code).unwrap_or_else(|err| panic!("cannot write {out:?}: {err}"));
}

struct Switch {
    name: String,
    values: Vec<String>,
    definition: String,
}

fn generate(text: &str) -> Result<String, String> {
    let table: toml::Table = text.parse().map_err(|err| format!("not TOML: {err}"))?;
    check_keys("the file", &table, &["switch", "profile"])?;
    let mut switches: Vec<Switch> = Vec::new();
    for entry in array(&table, "switch", "the file")? {
        let entry = entry.as_table().ok_or("each [[switch]] is a table")?;
        check_keys("a [[switch]]", entry, &["name", "values", "definition"])?;
        let name = string(entry, "name", "a [[switch]]")?;
        let what = format!("switch {name:?}");
        let values = match entry.get("values") {
            None => Vec::new(),
            Some(_) => strings(entry, "values", &what)?,
        };
        let two_ends = ["on", "off"].iter().all(|v| values.iter().any(|x| x == v));
        if !values.is_empty() && !two_ends {
            return Err(format!("{what}: values must include \"on\" and \"off\""));
        }
        let definition = string(entry, "definition", &what)?;
        if switches.iter().any(|s| s.name == name) {
            return Err(format!("{what} is listed twice"));
        }
        switches.push(Switch {
            name,
            values,
            definition,
        });
    }
    let mut profiles: Vec<(String, String)> = Vec::new();
    for entry in array(&table, "profile", "the file")? {
        let entry = entry.as_table().ok_or("each [[profile]] is a table")?;
        check_keys("a [[profile]]", entry, &["name", "set", "only"])?;
        let name = string(entry, "name", "a [[profile]]")?;
        let what = format!("profile {name:?}");
        if profiles.iter().any(|(n, _)| *n == name) {
            return Err(format!("{what} is listed twice"));
        }
        let words = match (entry.get("set"), entry.get("only")) {
            (Some(_), Some(_)) => return Err(format!("{what}: takes `set` or `only`, not both")),
            (None, None) => "every switch on".to_string(),
            (Some(_), None) => {
                let pairs = strings(entry, "set", &what)?;
                for pair in &pairs {
                    check_pair(&switches, pair).map_err(|err| format!("{what}: {err}"))?;
                }
                format!("{}, the rest on", pairs.join(", "))
            }
            (None, Some(_)) => {
                let on = strings(entry, "only", &what)?;
                for switch in &on {
                    if !switches.iter().any(|s| s.name == *switch) {
                        return Err(format!("{what}: unknown switch {switch:?} in `only`"));
                    }
                }
                format!("{} on, every other switch off", and_list(&on))
            }
        };
        profiles.push((name, words));
    }
    Ok(render(&switches, &profiles))
}

/// `name=value`: a known switch and one of its values (on/off for a two-valued switch).
fn check_pair(switches: &[Switch], pair: &str) -> Result<(), String> {
    let (name, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("{pair:?} is not switch=value"))?;
    let switch = switches
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("unknown switch {name:?}"))?;
    let allowed: Vec<&str> = if switch.values.is_empty() {
        vec!["off", "on"]
    } else {
        switch.values.iter().map(String::as_str).collect()
    };
    if !allowed.contains(&value) {
        return Err(format!(
            "{name} takes one of {}, not {value:?}",
            allowed.join(", ")
        ));
    }
    Ok(())
}

/// "a", "a and b", "a, b and c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => "no switch".into(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn render(switches: &[Switch], profiles: &[(String, String)]) -> String {
    let mut code = String::new();
    let quoted = |items: &mut dyn Iterator<Item = &str>| -> String {
        items
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        code,
        "/// The behaviour switches (docs/switches.md; asyncbis.switches.NAMES), in the order they are\n\
         /// tried (after the harness switch).\n\
         pub const SWITCHES: &[&str] = &[{}];\n",
        quoted(&mut switches.iter().map(|s| s.name.as_str()))
    )
    .unwrap();
    writeln!(
        code,
        "/// One line per switch (in `SWITCHES` order): what it changes, short. docs/switches.md has\n\
         /// the full definitions, values and profiles.\n\
         pub const SWITCH_DEFINITIONS: &[(&str, &str)] = &[{}];\n",
        switches
            .iter()
            .map(|s| format!("({:?}, {:?})", s.name, s.definition))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    writeln!(
        code,
        "/// The asyncbis profiles (asyncbis.switches.PROFILES) a study can run under (`--profile`);\n\
         /// their switch values are asked from the installed asyncbis.\n\
         pub const PROFILES: &[&str] = &[{}];\n",
        quoted(&mut profiles.iter().map(|(n, _)| n.as_str()))
    )
    .unwrap();
    writeln!(
        code,
        "/// Each profile's switch values, in words: reports record the profile's name, and the\n\
         /// comparison of profiles shows these.\n\
         pub const PROFILE_VALUES: &[(&str, &str)] = &[{}];",
        profiles
            .iter()
            .map(|(n, w)| format!("({n:?}, {w:?})"))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    code
}

fn check_keys(what: &str, table: &toml::Table, known: &[&str]) -> Result<(), String> {
    let unknown: BTreeSet<&str> = table
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what} has unknown keys {unknown:?} (known: {})",
            known.join(", ")
        ))
    }
}

fn array<'a>(
    table: &'a toml::Table,
    key: &str,
    what: &str,
) -> Result<&'a Vec<toml::Value>, String> {
    table
        .get(key)
        .and_then(toml::Value::as_array)
        .ok_or_else(|| format!("{what} needs [[{key}]] entries"))
}

fn string(table: &toml::Table, key: &str, what: &str) -> Result<String, String> {
    table
        .get(key)
        .and_then(toml::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{what} needs `{key}`, a string"))
}

fn strings(table: &toml::Table, key: &str, what: &str) -> Result<Vec<String>, String> {
    let items = table
        .get(key)
        .and_then(toml::Value::as_array)
        .ok_or_else(|| format!("{what}: `{key}` is a list of strings"))?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{what}: `{key}` is a list of strings"))
        })
        .collect()
}
