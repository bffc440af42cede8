//! Where `comet serve`'s settings come from. For each setting, the first of: its flag
//! (`--history-messages 32`), its environment variable (`COMET_HISTORY_MESSAGES=32`), the
//! config file (`--config FILE` or `COMET_CONFIG`: TOML, `history-messages = 32`), its default.
//!
//! clap stays the one parser: every flag gets its variable here ([`with_env`]), and the file's
//! settings are turned back into flags and parsed again ([`matches`]), so a value from the file
//! obeys the same types, ranges and rules as the flag, and a new flag is in the environment and
//! the file without anything written here. A key the file must not have (a typo, a setting of
//! another command) is refused, never ignored.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The subcommand whose flags come from the environment and the file.
const SERVE: &str = "serve";
/// The flag naming the file (the file cannot name another).
const CONFIG: &str = "config";

/// `COMET_` and the long flag name in capitals, `-` as `_`: `--publish-listen` reads
/// `COMET_PUBLISH_LISTEN`.
pub fn env_name(long: &str) -> String {
    format!("COMET_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// `cmd` with an environment variable for every flag of `serve` that has none yet. Values are
/// hidden from `--help` for all of them: some are secrets (`COMET_AUTH_SECRET`,
/// `COMET_CLUSTER_PASSWORD`), and a secret added later must not show by default. A switch
/// (`--demo`) reads `1`/`0`, `yes`/`no`, `on`/`off` as well as `true`/`false`, as env files
/// write them.
pub fn with_env(cmd: Command) -> Command {
    cmd.mut_subcommand(SERVE, |serve| {
        serve.mut_args(|mut arg| {
            if let (Some(long), None) = (arg.get_long(), arg.get_env()) {
                let name = env_name(long);
                arg = arg.env(name);
            }
            if matches!(arg.get_action(), ArgAction::SetTrue) {
                arg = arg.value_parser(clap::builder::BoolishValueParser::new());
            }
            arg.hide_env_values(true)
        })
    })
}

/// Parses `argv` with `cmd` (from [`with_env`]); when it runs `serve` with a config file, adds
/// the file's settings that neither a flag nor a variable gave, and parses again. Errors are
/// clap's, so `main` reports them all the same way (and exits 2).
pub fn matches(cmd: Command, argv: Vec<OsString>) -> Result<ArgMatches, clap::Error> {
    let first = cmd.clone().try_get_matches_from(&argv)?;
    let Some((SERVE, serve)) = first.subcommand() else {
        return Ok(first);
    };
    let Some(path) = serve.get_one::<std::path::PathBuf>(CONFIG) else {
        return Ok(first);
    };
    let fail = |message: String| {
        clap::Error::raw(
            ErrorKind::ValueValidation,
            format!("config file {}: {message}\n", path.display()),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let spec = cmd
        .find_subcommand(SERVE)
        .expect("the serve subcommand exists");
    let flags = file_flags(spec, serve, &text).map_err(fail)?;
    if flags.is_empty() {
        return Ok(first);
    }
    let mut argv = argv;
    argv.extend(flags.into_iter().map(OsString::from));
    // The first parse passed, so what fails now is the file's: say so. clap names the flag,
    // which is the key.
    cmd.try_get_matches_from(argv).map_err(|e| {
        let text = e.render().to_string();
        let first_line = text.lines().next().unwrap_or_default();
        fail(first_line.trim_start_matches("error: ").to_owned())
    })
}

/// The flags (`--key=value`) that stand for the file's settings, leaving out those already
/// given by a flag or a variable (`given`, the first parse of `serve`). Errors name the key.
fn file_flags(serve: &Command, given: &ArgMatches, text: &str) -> Result<Vec<String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // toml's message spans several lines (the line of the file, a caret): keep them.
        e.to_string().trim_end().to_owned()
    })?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != CONFIG)
            .ok_or_else(|| unknown_key(serve, key))?;
        let id = arg.get_id().as_str();
        if matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(on)) => {
                if *on {
                    flags.push(format!("--{key}"));
                }
            }
            (ArgAction::SetTrue, other) => {
                return Err(format!("{key} = {other}: {key} is a switch, true or false"))
            }
            (ArgAction::Append, toml::Value::Array(values)) => {
                for value in values {
                    flags.push(format!("--{key}={}", scalar(key, value)?));
                }
            }
            (_, value) => flags.push(format!("--{key}={}", scalar(key, value)?)),
        }
    }
    Ok(flags)
}

/// A string, number or boolean as the text of a flag's value.
fn scalar(key: &str, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "{key} = {other}: expected a string, a number or a boolean"
        )),
    }
}

/// The error for a key that is no flag of `serve`, with the likely intended one.
fn unknown_key(serve: &Command, key: &str) -> String {
    let dashed = key.replace('_', "-");
    let known = serve
        .get_arguments()
        .any(|a| a.get_long() == Some(dashed.as_str()) && dashed != CONFIG);
    if key == CONFIG {
        format!("unknown key {key:?}: a config file cannot name another")
    } else if known {
        format!("unknown key {key:?}: did you mean {dashed:?}? (keys are the long flag names)")
    } else {
        format!("unknown key {key:?} (keys are the long flag names of `comet serve`, as in `comet serve --help`)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    /// A `serve` with one flag of each kind.
    fn cmd() -> Command {
        Command::new("comet").subcommand(
            Command::new(SERVE)
                .arg(
                    Arg::new(CONFIG)
                        .long(CONFIG)
                        .value_parser(clap::value_parser!(std::path::PathBuf)),
                )
                .arg(
                    Arg::new("history_messages")
                        .long("history-messages")
                        .default_value("32")
                        .value_parser(clap::value_parser!(usize)),
                )
                .arg(Arg::new("demo").long("demo").action(ArgAction::SetTrue))
                .arg(
                    Arg::new("cluster")
                        .long("cluster")
                        .action(ArgAction::Append)
                        .value_delimiter(','),
                ),
        )
    }

    fn serve_flags(given: &[&str], text: &str) -> Result<Vec<String>, String> {
        let cmd = cmd();
        let mut argv = vec!["comet", SERVE];
        argv.extend_from_slice(given);
        let matches = cmd.clone().try_get_matches_from(argv).unwrap();
        let serve = cmd.find_subcommand(SERVE).unwrap();
        file_flags(serve, matches.subcommand_matches(SERVE).unwrap(), text)
    }

    #[test]
    fn file_settings_become_flags_unless_given() {
        let text = "history-messages = 8\ndemo = true\ncluster = [\"nats://a\", \"nats://b\"]\n";
        assert_eq!(
            serve_flags(&[], text).unwrap(),
            [
                "--cluster=nats://a",
                "--cluster=nats://b",
                "--demo",
                "--history-messages=8"
            ]
        );
        // A flag wins over the file.
        assert_eq!(
            serve_flags(&["--history-messages", "2", "--demo"], text).unwrap(),
            ["--cluster=nats://a", "--cluster=nats://b"]
        );
        assert_eq!(
            serve_flags(&[], "demo = false").unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let e = serve_flags(&[], "history_messages = 8").unwrap_err();
        assert!(e.contains("\"history_messages\"") && e.contains("\"history-messages\""));
        let e = serve_flags(&[], "histroy-messages = 8").unwrap_err();
        assert!(e.contains("unknown key \"histroy-messages\""), "{e}");
        let e = serve_flags(&[], "config = \"x\"").unwrap_err();
        assert!(e.contains("cannot name another"), "{e}");
        let e = serve_flags(&[], "demo = 1").unwrap_err();
        assert!(e.contains("demo is a switch"), "{e}");
        let e = serve_flags(&[], "history-messages = { a = 1 }").unwrap_err();
        assert!(e.contains("history-messages"), "{e}");
        let e = serve_flags(&[], "history-messages = ").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("publish-listen"), "COMET_PUBLISH_LISTEN");
        assert_eq!(env_name("cluster-tls-ca"), "COMET_CLUSTER_TLS_CA");
    }
}
