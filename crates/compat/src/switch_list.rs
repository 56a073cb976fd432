//! The library's list of behaviour switches and profiles (python/asyncbis/switches.toml) as
//! Rust source: build.rs compiles it into the constants of `analysis` (SWITCHES,
//! SWITCH_DEFINITIONS, PROFILES, PROFILE_VALUES). A malformed list is an error naming the
//! entry, which fails the build.

use std::collections::BTreeSet;
use std::fmt::Write as _;

struct Switch {
    name: String,
    values: Vec<String>,
    definition: String,
}

pub fn generate(text: &str) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::generate;

    const SWITCHES: &str = r#"
[[switch]]
name = "a"
values = ["off", "on", "later"]
definition = "A"

[[switch]]
name = "b"
definition = "B"

[[switch]]
name = "c"
definition = "C"
"#;

    fn with_profiles(profiles: &str) -> Result<String, String> {
        generate(&format!("{SWITCHES}\n{profiles}"))
    }

    #[test]
    fn profiles_are_put_in_words() {
        let code = with_profiles(
            r#"
[[profile]]
name = "all"

[[profile]]
name = "later"
set = ["a=later", "c=off"]

[[profile]]
name = "one"
only = ["b"]

[[profile]]
name = "three"
only = ["a", "b", "c"]
"#,
        )
        .unwrap();
        assert!(
            code.contains(r#"pub const PROFILES: &[&str] = &["all", "later", "one", "three"];"#)
        );
        for words in [
            r#"("all", "every switch on")"#,
            r#"("later", "a=later, c=off, the rest on")"#,
            r#"("one", "b on, every other switch off")"#,
            r#"("three", "a, b and c on, every other switch off")"#,
        ] {
            assert!(code.contains(words), "{words} not in {code}");
        }
        assert!(
            code.contains(r#"("a", "A"), ("b", "B"), ("c", "C")"#),
            "{code}"
        );
    }

    #[test]
    fn a_malformed_list_is_an_error_naming_the_entry() {
        let profile = |body: &str| with_profiles(&format!("[[profile]]\nname = \"p\"\n{body}"));
        let cases = [
            (profile("only = [\"d\"]"), "profile \"p\": unknown switch \"d\" in `only`"),
            (profile("set = [\"d=on\"]"), "profile \"p\": unknown switch \"d\""),
            (
                profile("set = [\"a=sometimes\"]"),
                "profile \"p\": a takes one of off, on, later, not \"sometimes\"",
            ),
            (
                profile("set = [\"b=later\"]"),
                "profile \"p\": b takes one of off, on, not \"later\"",
            ),
            (profile("set = [\"b\"]"), "profile \"p\": \"b\" is not switch=value"),
            (
                profile("set = []\nonly = []"),
                "profile \"p\": takes `set` or `only`, not both",
            ),
            (profile("off = [\"a\"]"), "a [[profile]] has unknown keys {\"off\"}"),
            (profile("only = \"b\""), "profile \"p\": `only` is a list of strings"),
            (
                with_profiles("[[profile]]\nname = \"p\"\n[[profile]]\nname = \"p\""),
                "profile \"p\" is listed twice",
            ),
            (
                generate("[[switch]]\nname = \"a\"\ndefinition = \"A\"\n[[switch]]\nname = \"a\"\ndefinition = \"A\""),
                "switch \"a\" is listed twice",
            ),
            (
                generate("[[switch]]\nname = \"a\"\nvalues = [\"on\", \"later\"]\ndefinition = \"A\""),
                "switch \"a\": values must include \"on\" and \"off\"",
            ),
            (
                generate("[[switch]]\nname = \"a\""),
                "switch \"a\" needs `definition`, a string",
            ),
            (generate("[[profile]]\nname = \"p\""), "the file needs [[switch]] entries"),
            (generate("[switch]"), "the file needs [[switch]] entries"),
            (generate("switch = ["), "not TOML"),
        ];
        for (result, message) in cases {
            let err = result.expect_err(message);
            assert!(err.contains(message), "{err:?} does not say {message:?}");
        }
    }
}
