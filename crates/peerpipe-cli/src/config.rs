//! The config file (`peerpipe config`): the server, token and CA certificate
//! the client commands use when neither a flag nor an environment variable
//! gives them.
//!
//! Precedence, highest first: the command-line flag (`--server`), the
//! environment variable (`PEERPIPE_SERVER`), the config file, the built-in
//! default. The file's values are handed to clap as the arguments' defaults,
//! so clap's own order (flag > env > default) gives exactly that.
//!
//! The file is `$PEERPIPE_CONFIG`, else `$XDG_CONFIG_HOME/peerpipe/config.toml`,
//! else `~/.config/peerpipe/config.toml`. Its format is a small subset of TOML
//! that any TOML parser reads too: one `key = "value"` a line (a basic string
//! with `\"`, `\\`, `\n`, `\t`, `\r`, `\uXXXX` escapes, or a literal
//! `'string'`), blank lines and `#` comments, which `peerpipe config set` and
//! `unset` keep as they are. No tables, no other types, no key twice. It is
//! written to a temporary file beside it and renamed into place, mode 0600
//! (it holds a token).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

/// The keys a config file may set.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Key {
    /// The signaling server (`--server`, `PEERPIPE_SERVER`).
    Server,
    /// The admission token (`--token`, `PEERPIPE_TOKEN`).
    Token,
    /// A PEM file of certificates to trust (`--ca-cert`, `PEERPIPE_CA_CERT`).
    CaCert,
}

impl Key {
    /// Every key, in the order `config list` shows them.
    pub const ALL: [Key; 3] = [Key::Server, Key::Token, Key::CaCert];

    /// The key's name in the file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Key::Server => "server",
            Key::Token => "token",
            Key::CaCert => "ca-cert",
        }
    }

    /// The clap id of the argument the key supplies the default of.
    fn arg_id(self) -> &'static str {
        match self {
            Key::Server => "server",
            Key::Token => "token",
            Key::CaCert => "ca_cert",
        }
    }

    fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The known key names, for error messages.
    fn known() -> String {
        Key::ALL.map(Key::name).join(", ")
    }
}

/// `peerpipe config`.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    peerpipe config set server wss://pipe.example.org\n  \
    peerpipe token --secret-file SECRET --user me | peerpipe config set token -\n  \
    peerpipe config get server\n  \
    peerpipe config list\n\n\
    A flag (--server) wins over its environment variable (PEERPIPE_SERVER), which wins \
    over the config file, which wins over the built-in default.")]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Set KEY to VALUE in the config file (created, mode 0600, if absent).
    Set {
        /// The key.
        key: Key,
        /// The value; `-` reads it from the first line of standard input (a
        /// token then stays out of the shell's history and the process list).
        /// A relative ca-cert path is stored as an absolute one.
        value: String,
    },
    /// Print KEY's value in the config file on stdout (exit status 1 if unset).
    Get {
        /// The key.
        key: Key,
    },
    /// Print every key set in the config file, `key = "value"` a line.
    List,
    /// Remove KEY from the config file.
    Unset {
        /// The key.
        key: Key,
    },
    /// Print the config file's path (whether or not it exists).
    Path,
}

/// Runs `peerpipe config …`.
pub fn run(args: &ConfigArgs) -> Result<()> {
    let path = path();
    match &args.command {
        ConfigCommand::Path => println!("{}", path.display()),
        ConfigCommand::Get { key } => {
            let config = Config::load(&path)?;
            match config.get(*key) {
                Some(value) => println!("{value}"),
                None => bail!("{} is not set in {}", key.name(), path.display()),
            }
        }
        ConfigCommand::List => {
            let config = Config::load(&path)?;
            for key in Key::ALL {
                if let Some(value) = config.get(key) {
                    println!("{} = {}", key.name(), quote(value));
                }
            }
        }
        ConfigCommand::Set { key, value } => {
            let mut config = Config::load(&path)?;
            let value = if value == "-" {
                read_stdin_line()?
            } else {
                value.clone()
            };
            let value = validate(*key, &value)?;
            config.set(*key, &value);
            config.save()?;
            say!("{} set in {}", key.name(), path.display());
        }
        ConfigCommand::Unset { key } => {
            let mut config = Config::load(&path)?;
            if config.unset(*key) {
                config.save()?;
                say!("{} removed from {}", key.name(), path.display());
            } else {
                say!("{} was not set in {}", key.name(), path.display());
            }
        }
    }
    Ok(())
}

/// The config file: `$PEERPIPE_CONFIG`, else `config.toml` in the per-user
/// configuration directory.
pub fn path() -> PathBuf {
    std::env::var_os("PEERPIPE_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::identity::config_dir().join("config.toml"))
}

/// The commands whose arguments the config file supplies defaults for.
const CLIENT_COMMANDS: [&str; 7] = [
    "peers", "listen", "connect", "send", "receive", "share", "get",
];

/// Whether the command line runs a client command (one that reads the config
/// file). The top-level options (`-v`, `-q`, `--help`, `--version`) take no
/// value, so the first argument not starting with `-` is the command's name.
pub fn is_client_command(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .is_some_and(|name| CLIENT_COMMANDS.iter().any(|c| name == *c))
}

/// `command` with the config file's values as the defaults of the client
/// commands' `--server`, `--token` and `--ca-cert`: a flag or an environment
/// variable still wins over them. A token from the file satisfies a command
/// that requires one, and is never shown in `--help`.
pub fn apply(mut command: clap::Command, config: &Config) -> clap::Command {
    for key in Key::ALL {
        let Some(value) = config.get(key) else {
            continue;
        };
        // clap (without its `string` feature) keeps defaults as `&'static str`;
        // this runs once per process, for at most three short values.
        let value: &'static str = Box::leak(value.to_string().into_boxed_str());
        let names: Vec<String> = command
            .get_subcommands()
            .filter(|sub| sub.get_arguments().any(|a| a.get_id() == key.arg_id()))
            .map(|sub| sub.get_name().to_string())
            .collect();
        for name in names {
            command = command.mut_subcommand(name, |sub| {
                sub.mut_arg(key.arg_id(), |arg| {
                    let arg = arg.default_value(value).required(false);
                    if key == Key::Token {
                        arg.hide_default_value(true)
                    } else {
                        arg
                    }
                })
            });
        }
    }
    command
}

/// What a value for `key` must look like; the value to store.
fn validate(key: Key, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        bail!(
            "the value is empty (to remove {0}, run: peerpipe config unset {0})",
            key.name()
        );
    }
    match key {
        Key::Server => {
            let url = crate::client::server_url(value);
            let scheme = url.split_once("://").map_or("", |(s, _)| s);
            if !matches!(scheme, "ws" | "wss") || value.contains(char::is_whitespace) {
                bail!(
                    "{value:?} is not a server address: give a ws://, wss://, http:// or \
                     https:// URL, or HOST:PORT"
                );
            }
            Ok(value.to_string())
        }
        Key::Token => {
            if value.contains(char::is_whitespace) {
                bail!("a token has no spaces or line breaks in it (is this the token?)");
            }
            Ok(value.to_string())
        }
        Key::CaCert => {
            let path = std::path::absolute(value)
                .with_context(|| format!("making {value} an absolute path"))?;
            let meta = fs::metadata(&path).with_context(|| format!("{}", path.display()))?;
            if !meta.is_file() {
                bail!(
                    "{} is not a file (a PEM file of certificates)",
                    path.display()
                );
            }
            path.to_str()
                .map(str::to_string)
                .with_context(|| format!("{} is not valid UTF-8", path.display()))
        }
    }
}

/// The first line of standard input, without its line break.
fn read_stdin_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the value from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The comment a new config file starts with.
const HEADER: &str = "# peerpipe config (see `peerpipe config --help`): key = \"value\" lines";

/// A config file, line by line as read, so that rewriting it keeps comments.
pub struct Config {
    path: PathBuf,
    lines: Vec<Line>,
}

enum Line {
    /// A blank line or a comment, kept as it was.
    Other(String),
    /// `key = "value"`.
    Entry { key: Key, value: String },
}

impl Config {
    /// Reads the file at `path`; a file that does not exist is an empty config.
    /// A file that is not what this module describes is an error that names
    /// the file and the line.
    pub fn load(path: &Path) -> Result<Config> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}: the file is not UTF-8 text", path.display()))?;
        let lines = parse(&text).map_err(|(number, what)| {
            anyhow::anyhow!(
                "{}:{number}: {what}\n  hint: the config file holds only key = \"value\" \
                 lines and # comments; fix or remove that line",
                path.display(),
            )
        })?;
        let config = Config {
            path: path.to_path_buf(),
            lines,
        };
        if config.get(Key::Token).is_some() {
            warn_if_readable_by_others(path);
        }
        Ok(config)
    }

    /// `key`'s value, if set.
    pub fn get(&self, key: Key) -> Option<&str> {
        self.lines.iter().find_map(|line| match line {
            Line::Entry { key: k, value } if *k == key => Some(value.as_str()),
            _ => None,
        })
    }

    fn set(&mut self, key: Key, value: &str) {
        for line in &mut self.lines {
            if let Line::Entry { key: k, value: v } = line
                && *k == key
            {
                *v = value.to_string();
                return;
            }
        }
        if self.lines.is_empty() {
            self.lines.push(Line::Other(HEADER.to_string()));
        }
        self.lines.push(Line::Entry {
            key,
            value: value.to_string(),
        });
    }

    /// Removes `key`; whether it was set.
    fn unset(&mut self, key: Key) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|line| !matches!(line, Line::Entry { key: k, .. } if *k == key));
        self.lines.len() != before
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            match line {
                Line::Other(raw) => text.push_str(raw),
                Line::Entry { key, value } => {
                    let _ = write!(text, "{} = {}", key.name(), quote(value));
                }
            }
            text.push('\n');
        }
        text
    }

    /// Writes the file atomically: a temporary file (mode 0600) beside it,
    /// synced, then renamed over it. Creates its directory (mode 0700) if absent.
    fn save(&self) -> Result<()> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(self.render().as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            // The rename itself reaches the disk with the directory.
            if let Ok(dir) = fs::File::open(&dir) {
                let _ = dir.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!("writing {}", self.path.display()))
        })
    }
}

/// Says so on stderr when the file with a token in it is readable by others.
fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        say!(
            "warning: {0} holds a token and others may read it (mode {1:o}); run: chmod 600 {0}",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
}

/// Parses the file's text; on error the 1-based line number and what is wrong.
fn parse(text: &str) -> std::result::Result<Vec<Line>, (usize, String)> {
    let mut lines = Vec::new();
    let mut seen: Vec<(Key, usize)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            lines.push(Line::Other(raw.to_string()));
            continue;
        }
        if trimmed.starts_with('[') {
            return Err((number, "tables ([...]) are not supported".to_string()));
        }
        let Some((name, rest)) = trimmed.split_once('=') else {
            return Err((number, "expected key = \"value\"".to_string()));
        };
        let name = name.trim();
        let Some(key) = Key::from_name(name) else {
            return Err((
                number,
                format!("unknown key {name:?} (known: {})", Key::known()),
            ));
        };
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            return Err((
                number,
                format!("{name} is set twice (first on line {first})"),
            ));
        }
        let value = parse_string(rest.trim()).map_err(|what| (number, what))?;
        seen.push((key, number));
        lines.push(Line::Entry { key, value });
    }
    Ok(lines)
}

/// A TOML basic (`"…"`) or literal (`'…'`) string, then nothing but an
/// optional comment.
fn parse_string(s: &str) -> std::result::Result<String, String> {
    let mut chars = s.chars();
    let (value, rest) = match chars.next() {
        Some('\'') => {
            let body = chars.as_str();
            let Some(end) = body.find('\'') else {
                return Err("the value's closing ' is missing".to_string());
            };
            (body[..end].to_string(), &body[end + 1..])
        }
        Some('"') => {
            let mut value = String::new();
            let mut closed = None;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = Some(chars.as_str());
                        break;
                    }
                    '\\' => value.push(match chars.next() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some(u @ ('u' | 'U')) => {
                            let len = if u == 'u' { 4 } else { 8 };
                            let hex: String = chars.by_ref().take(len).collect();
                            u32::from_str_radix(&hex, 16)
                                .ok()
                                .filter(|_| hex.len() == len)
                                .and_then(char::from_u32)
                                .ok_or_else(|| format!("\\{u}{hex} is not a character"))?
                        }
                        other => {
                            return Err(format!(
                                "unknown escape \\{} in the value",
                                other.map(String::from).unwrap_or_default()
                            ));
                        }
                    }),
                    c => value.push(c),
                }
            }
            let Some(rest) = closed else {
                return Err("the value's closing \" is missing".to_string());
            };
            (value, rest)
        }
        _ => {
            return Err("the value must be a quoted string: key = \"value\"".to_string());
        }
    };
    let rest = rest.trim();
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err(format!("unexpected {rest:?} after the value"));
    }
    Ok(value)
}

/// `value` as a TOML basic string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::{Key, parse, parse_string, quote};

    #[test]
    fn strings_round_trip() {
        for value in ["wss://h/x", "a\"b\\c", "tab\there", "é ünï \u{1}"] {
            assert_eq!(parse_string(&quote(value)).as_deref(), Ok(value));
        }
        assert_eq!(parse_string("'C:\\x' # c").as_deref(), Ok("C:\\x"));
        assert_eq!(parse_string("\"\\u00e9\"").as_deref(), Ok("é"));
        assert!(parse_string("\"open").is_err());
        assert!(parse_string("bare").is_err());
        assert!(parse_string("\"a\" b").is_err());
        assert!(parse_string("\"\\q\"").is_err());
        assert!(parse_string("\"\\u12\"").is_err());
    }

    #[test]
    fn bad_lines_are_numbered() {
        assert_eq!(
            parse("# c\n\nserver = \"x\"\n").map(|l| l.len()).ok(),
            Some(3)
        );
        let err = |text: &str| parse(text).err().map(|(n, _)| n);
        assert_eq!(err("# c\nserver = x\n"), Some(2));
        assert_eq!(err("server = \"a\"\nserver = \"b\"\n"), Some(2));
        assert_eq!(err("\n\nsever = \"a\"\n"), Some(3));
        assert_eq!(err("[peerpipe]\n"), Some(1));
        assert_eq!(err("token\n"), Some(1));
        assert!(Key::known().contains("ca-cert"));
    }
}
