//! One file, one stream: which `[[stream]]` reads a file that several
//! entries could name.
//!
//! Two streams on one file fight over it: each connection the client opens
//! for the file takes the server side over from the other, forever. So:
//!
//! - The same file named twice, literally (after lexical normalisation:
//!   `/var/log//a.log`, `/var/log/./a.log` and a relative path resolved
//!   against the working directory are all `/var/log/a.log`), or the same
//!   glob, or the same `directory` with the same `filepattern`, is a
//!   configuration error ([`duplicate`]).
//! - Entries that only *overlap* (`/var/log/*.log` and `/var/log/app*.log`,
//!   a glob and a literal `path`, a `directory` source and a followed path)
//!   are allowed, and each file goes to exactly one of them by this rule:
//!   **a literal path wins over any glob; among globs, the first matching
//!   entry in config order wins.** [`claims`] works out, for each entry,
//!   which other entries it must leave files to; the client applies it
//!   with the real matchers whenever a directory source looks at a name,
//!   and logs the overlaps once at start-up ([`Overlap`]).
//!
//! Whether two globs can match a common name is decided over their syntax
//! ([`may_share`]); where unsure (a syntax this module does not parse, too
//! many alternatives) it answers yes, which only costs a log line: the
//! runtime decision always uses the real matchers.
//!
//! Normalisation is lexical only: symlinks and hard links are not resolved
//! (the file may not exist yet), and `..` stays as written.

use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::client::{Method, Source, StreamConfig};
use super::compile_glob;

/// `p` made absolute against the working directory, without `.`
/// components, repeated or trailing separators. `..` is kept (it cannot be
/// removed without looking at symlinks).
pub fn normalize(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    abs.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// True when the last component of `p` is a glob pattern.
pub fn is_glob(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().contains(['*', '?', '[', '{']))
}

/// Which names a stream takes in its directory.
#[derive(Debug, Clone)]
pub enum Names {
    /// One file: a literal `path`.
    File(OsString),
    /// Every name the glob matches: a `path` glob (followed) or a
    /// `directory` source's `filepattern`.
    Glob {
        /// The compiled pattern.
        matcher: globset::GlobMatcher,
        /// The pattern as written.
        text: String,
    },
}

impl Names {
    /// Whether this takes the file name `name`.
    pub fn matches(&self, name: &std::ffi::OsStr) -> bool {
        match self {
            Names::File(n) => n == name,
            Names::Glob { matcher, .. } => matcher.is_match(Path::new(name)),
        }
    }
}

/// Where a configured stream reads: a directory and names in it.
#[derive(Debug, Clone)]
pub struct Reach {
    /// The directory, [`normalize`]d.
    pub dir: PathBuf,
    /// The names taken there.
    pub names: Names,
}

impl Reach {
    /// The reach of `s`. A `path` is a glob only when followed
    /// (`method = "watch"`) and its file name has a pattern character; a
    /// pattern that does not compile counts as a literal name (the client
    /// refuses it when it starts the stream).
    pub fn of(s: &StreamConfig) -> Reach {
        match &s.source {
            Source::Path(p) => {
                let path = normalize(p);
                let dir = path.parent().map_or_else(|| "/".into(), Path::to_path_buf);
                let name = path.file_name().unwrap_or_default().to_os_string();
                let text = name.to_string_lossy().into_owned();
                let names = match compile_glob(&text) {
                    Ok(matcher) if s.method == Method::Watch && is_glob(&path) => {
                        Names::Glob { matcher, text }
                    }
                    _ => Names::File(name),
                };
                Reach { dir, names }
            }
            Source::Directory {
                dir,
                pattern,
                pattern_text,
            } => Reach {
                dir: normalize(dir),
                names: Names::Glob {
                    matcher: pattern.clone(),
                    text: pattern_text.clone(),
                },
            },
        }
    }

    /// Same directory and the same literal name or glob text.
    fn same_as(&self, other: &Reach) -> bool {
        self.dir == other.dir
            && match (&self.names, &other.names) {
                (Names::File(a), Names::File(b)) => a == b,
                (Names::Glob { text: a, .. }, Names::Glob { text: b, .. }) => a == b,
                _ => false,
            }
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.names {
            Names::File(n) => write!(f, "{}", self.dir.join(n).display()),
            Names::Glob { text, .. } => write!(f, "{}", self.dir.join(text).display()),
        }
    }
}

/// The first pair `(earlier, later)` of streams (0-based) that read the
/// same file or the same glob.
pub fn duplicate(streams: &[StreamConfig]) -> Option<(usize, usize)> {
    let reaches: Vec<Reach> = streams.iter().map(Reach::of).collect();
    (1..reaches.len()).find_map(|later| {
        (0..later)
            .find(|&earlier| reaches[earlier].same_as(&reaches[later]))
            .map(|earlier| (earlier, later))
    })
}

/// Two streams that can match the same file, and which one gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The stream that takes the shared files (0-based).
    pub winner: usize,
    /// The stream that leaves them alone.
    pub loser: usize,
    /// Why the winner wins.
    pub why: Why,
}

/// The reason in an [`Overlap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The winner names the file literally; the loser's glob matches it.
    Literal,
    /// Both are globs; the winner comes first in the config.
    FirstInOrder,
}

/// How the configured streams share files: for each stream, the streams
/// it leaves matching files to, and every overlap for the start-up log.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// `yields[i]`: streams (0-based) whose files stream `i` must not take.
    /// Empty for literal paths; for a glob, the literal paths in its
    /// directory that it matches and the earlier globs there that may
    /// match a name it matches.
    pub yields: Vec<Vec<usize>>,
    /// Every pair that can share a file, in config order of the loser.
    pub overlaps: Vec<Overlap>,
}

/// Applies the rule (literal wins, then first in config order) to
/// `reaches`, one per configured stream in config order.
pub fn claims(reaches: &[Reach]) -> Claims {
    let mut c = Claims {
        yields: vec![Vec::new(); reaches.len()],
        overlaps: Vec::new(),
    };
    for (i, r) in reaches.iter().enumerate() {
        let Names::Glob { matcher, text } = &r.names else {
            continue;
        };
        for (j, other) in reaches.iter().enumerate() {
            if j == i || other.dir != r.dir {
                continue;
            }
            let why = match &other.names {
                Names::File(n) if matcher.is_match(Path::new(n)) => Why::Literal,
                Names::Glob { text: t, .. } if j < i && may_share(t, text) => Why::FirstInOrder,
                _ => continue,
            };
            c.yields[i].push(j);
            c.overlaps.push(Overlap {
                winner: j,
                loser: i,
                why,
            });
        }
    }
    c
}

impl Overlap {
    /// One line for the start-up log.
    pub fn describe(&self, reaches: &[Reach]) -> String {
        let (w, l) = (self.winner, self.loser);
        match self.why {
            Why::Literal => format!(
                "stream #{} ({}) also matches stream #{}'s file {}: it goes to stream #{} only (a literal path wins over a glob)",
                l + 1, reaches[l], w + 1, reaches[w], w + 1
            ),
            Why::FirstInOrder => format!(
                "streams #{} ({}) and #{} ({}) can match the same files: each goes to stream #{} only (the first in config order)",
                w + 1, reaches[w], l + 1, reaches[l], w + 1
            ),
        }
    }
}

/// One pattern character.
#[derive(Debug, Clone, PartialEq, Eq)]
enum One {
    /// `?` (or anything this module treats as any character).
    Any,
    /// A literal character.
    Lit(char),
    /// `[...]`: inclusive ranges, negated by a leading `!` or `^`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A glob as a sequence: `*` (any run of characters) or one character.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Star,
    One(One),
}

/// Most alternatives a `{a,b}` expansion may produce before [`may_share`]
/// gives up and answers yes.
const MAX_ALTERNATIVES: usize = 64;

/// Whether some file name matches both globs (`*`, `?`, `[...]`, `{a,b}`,
/// `\` escapes; `**` is `*` within a name). Yes when unsure.
pub fn may_share(a: &str, b: &str) -> bool {
    let (Some(xs), Some(ys)) = (expand(a), expand(b)) else {
        return true;
    };
    xs.iter().any(|x| {
        ys.iter().any(|y| {
            let (Some(tx), Some(ty)) = (tokens(x), tokens(y)) else {
                return true;
            };
            meet(&tx, &ty)
        })
    })
}

/// Expands `{a,b}` alternations (not nested) into plain patterns; `None`
/// when nested, unbalanced or too many.
fn expand(pattern: &str) -> Option<Vec<String>> {
    let mut out = vec![String::new()];
    let mut rest = pattern;
    while let Some(open) = find_unescaped(rest, '{') {
        let close = find_unescaped(&rest[open..], '}')? + open;
        let inner = &rest[open + 1..close];
        if find_unescaped(inner, '{').is_some() {
            return None;
        }
        let head = &rest[..open];
        let alts: Vec<&str> = inner.split(',').collect();
        if out.len() * alts.len() > MAX_ALTERNATIVES {
            return None;
        }
        out = out
            .iter()
            .flat_map(|o| alts.iter().map(move |a| format!("{o}{head}{a}")))
            .collect();
        rest = &rest[close + 1..];
    }
    Some(out.into_iter().map(|o| o + rest).collect())
}

/// Byte index of the first `c` not escaped by `\` and not inside `[...]`.
fn find_unescaped(s: &str, c: char) -> Option<usize> {
    let mut chars = s.char_indices();
    let mut in_class = false;
    while let Some((i, ch)) = chars.next() {
        match ch {
            '\\' => {
                chars.next();
            }
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            _ if ch == c && !in_class => return Some(i),
            _ => {}
        }
    }
    None
}

/// Tokenises a pattern without alternations; `None` on a syntax error.
fn tokens(pattern: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let tok = match c {
            '*' => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                Tok::Star
            }
            '?' => Tok::One(One::Any),
            '\\' => Tok::One(One::Lit(chars.next()?)),
            '[' => Tok::One(class(&mut chars)?),
            c => Tok::One(One::Lit(c)),
        };
        out.push(tok);
    }
    Some(out)
}

/// The rest of a `[...]` class after its `[`.
fn class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<One> {
    let negated = matches!(chars.peek(), Some('!' | '^'));
    if negated {
        chars.next();
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = chars.next()?;
        if c == ']' && !first {
            return Some(One::Class { negated, ranges });
        }
        first = false;
        let hi = if chars.peek() == Some(&'-') {
            chars.next();
            match chars.next()? {
                ']' => {
                    ranges.push((c, c));
                    ranges.push(('-', '-'));
                    return Some(One::Class { negated, ranges });
                }
                hi => hi,
            }
        } else {
            c
        };
        ranges.push((c, hi));
    }
}

/// Whether one character can match both.
fn one_meets(a: &One, b: &One) -> bool {
    let in_ranges = |c: char, r: &[(char, char)]| r.iter().any(|&(lo, hi)| lo <= c && c <= hi);
    let class_has = |c: char, negated: bool, r: &[(char, char)]| in_ranges(c, r) != negated;
    match (a, b) {
        (One::Any, _) | (_, One::Any) => true,
        (One::Lit(x), One::Lit(y)) => x == y,
        (One::Lit(c), One::Class { negated, ranges })
        | (One::Class { negated, ranges }, One::Lit(c)) => class_has(*c, *negated, ranges),
        (
            One::Class {
                negated: na,
                ranges: ra,
            },
            One::Class {
                negated: nb,
                ranges: rb,
            },
        ) => match (na, nb) {
            (true, true) => true,
            (false, false) => ra
                .iter()
                .any(|&(l1, h1)| rb.iter().any(|&(l2, h2)| l1 <= h2 && l2 <= h1)),
            // Some character of the positive class outside the negated one
            // (looked for among the first 4096; beyond that, assume yes).
            (false, true) => {
                let mut chars = ra.iter().flat_map(|&(l, h)| l..=h);
                chars.by_ref().take(4096).any(|c| !in_ranges(c, rb)) || chars.next().is_some()
            }
            (true, false) => one_meets(b, a),
        },
    }
}

/// Whether the token sequences `a` and `b` match a common string: a
/// dynamic programme over positions (`*` eats the other side's characters
/// one at a time).
fn meet(a: &[Tok], b: &[Tok]) -> bool {
    let width = b.len() + 1;
    let mut memo: Vec<Option<bool>> = vec![None; (a.len() + 1) * width];
    // Fill from the ends backwards so each cell's successors are known.
    for i in (0..=a.len()).rev() {
        for j in (0..=b.len()).rev() {
            let at = |i: usize, j: usize| memo[i * width + j] == Some(true);
            let v = match (a.get(i), b.get(j)) {
                (None, None) => true,
                (Some(Tok::Star), _) => at(i + 1, j) || (j < b.len() && at(i, j + 1)),
                (_, Some(Tok::Star)) => at(i, j + 1) || (i < a.len() && at(i + 1, j)),
                (Some(Tok::One(x)), Some(Tok::One(y))) => one_meets(x, y) && at(i + 1, j + 1),
                _ => false,
            };
            memo[i * width + j] = Some(v);
        }
    }
    memo[0] == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_lexical() {
        let n = |s: &str| normalize(Path::new(s));
        assert_eq!(n("/var/log//a.log"), Path::new("/var/log/a.log"));
        assert_eq!(n("/var/log/./a.log"), Path::new("/var/log/a.log"));
        assert_eq!(n("/var/log/"), Path::new("/var/log"));
        assert_eq!(n("/var/x/../a"), Path::new("/var/x/../a"));
        assert!(n("rel/a").is_absolute());
    }

    #[test]
    fn globs_that_share_a_name() {
        let cases = [
            ("*.log", "app*.log", true),
            ("*.log", "a*", true),
            ("*.log", "*.gz", false),
            ("*.log.*.gz", "*.gz", true),
            ("a?c", "a[bx]c", true),
            ("a[!b]c", "abc", false),
            ("a[!b]c", "a[bc]c", true),
            ("a[!b]c", "a[b]c", false),
            ("[a-c]x", "[d-f]x", false),
            ("[a-c]x", "[c-f]x", true),
            ("{a,b}.log", "b*", true),
            ("{a,b}.log", "c*", false),
            ("x\\*", "x*", true),
            ("x\\*", "xy", false),
            ("**", "anything", true),
            ("[", "x", true), // unparseable: assume yes
            ("", "", true),
            ("a", "", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(may_share(a, b), want, "{a} vs {b}");
            assert_eq!(may_share(b, a), want, "{b} vs {a}");
        }
    }

    fn glob(dir: &str, text: &str) -> Reach {
        Reach {
            dir: dir.into(),
            names: Names::Glob {
                matcher: compile_glob(text).unwrap(),
                text: text.into(),
            },
        }
    }

    fn file(dir: &str, name: &str) -> Reach {
        Reach {
            dir: dir.into(),
            names: Names::File(name.into()),
        }
    }

    #[test]
    fn literal_wins_then_first_in_order() {
        let reaches = [
            glob("/d", "app*.log"),
            glob("/d", "*.log"),
            file("/d", "app2.log"),
            glob("/e", "*.log"),
            glob("/d", "*.gz"),
        ];
        let c = claims(&reaches);
        assert_eq!(c.yields, vec![vec![2], vec![0, 2], vec![], vec![], vec![]]);
        assert_eq!(c.overlaps.len(), 3);
        assert_eq!(
            c.overlaps[1],
            Overlap {
                winner: 0,
                loser: 1,
                why: Why::FirstInOrder
            }
        );
        let line = c.overlaps[0].describe(&reaches);
        assert!(line.contains("goes to stream #3 only"), "{line}");
    }
}
