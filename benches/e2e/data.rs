//! The data set: deterministic, realistic log lines, and byte-exact
//! comparison of files without holding them in memory.
//!
//! Every line is 80–300 bytes including its `\n`, one of three shapes
//! (syslog, nginx access log, application log) with a timestamp that grows
//! with the line number, and ends in ` seq=N` where `N` is the line's
//! number in the data set (0-based). The live-tail scenario reads `N` back
//! from the server's output to time each line and to check order. The
//! same seed always gives the same bytes, on every machine.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// xorshift64*: small, fast and good enough to pick words.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const HOSTS: [&str; 6] = ["web01", "web02", "web03", "db1", "lb-vie-2", "cache7"];
const PROGRAMS: [&str; 6] = [
    "sshd",
    "nginx",
    "kernel",
    "CRON",
    "systemd",
    "postfix/smtpd",
];
const SYSLOG_MSGS: [&str; 6] = [
    "Accepted publickey for deploy from 10.0.3.7 port 51234 ssh2: ED25519 SHA256:q9Zk1",
    "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
    "TCP: request_sock_TCP: Possible SYN flooding on port 443. Sending cookies.",
    "Started Daily apt download activities.",
    "connect from unknown[192.0.2.44]",
    "Out of memory: Killed process 4711 (java) total-vm:8123456kB, anon-rss:4012344kB",
];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
const URLS: [&str; 6] = [
    "/api/v1/items?page=3",
    "/static/js/app.4f2a9c.js",
    "/healthz",
    "/api/v1/orders/98123/lines?expand=product,price",
    "/login?next=%2Fdashboard",
    "/favicon.ico",
];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "curl/8.5.0",
    "Prometheus/2.51.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15",
];
const LEVELS: [&str; 4] = ["INFO", "INFO", "WARN", "ERROR"];
const WORDS: [&str; 12] = [
    "request_id=9f3c2a7e41b0",
    "user=4711",
    "latency_ms=12",
    "upstream=10.0.7.12:8080",
    "cache=miss",
    "bytes=5120",
    "retry=2",
    "tenant=acme",
    "op=checkout",
    "db_ms=3",
    "status=ok",
    "region=eu-central",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Appends data-set line number `seq` (with its `\n`) to `out`.
pub struct LineGen {
    rng: Rng,
}

impl LineGen {
    pub fn new() -> LineGen {
        LineGen {
            rng: Rng(0x9E37_79B9_7F4A_7C15),
        }
    }

    pub fn line(&mut self, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        let len = 80 + self.rng.below(221); // 80..=300 with the '\n'
        let suffix = format!(" seq={seq}\n");
        // 13 ms per line: a busy host's day.
        let ms = seq * 13;
        let (day, h, m, s, frac) = (
            1 + (ms / 86_400_000) % 28,
            (ms / 3_600_000) % 24,
            (ms / 60_000) % 60,
            (ms / 1000) % 60,
            ms % 1000,
        );
        let month = MONTHS[((ms / (28 * 86_400_000)) % 12) as usize];
        let r = self.rng.next();
        let _ = match r % 3 {
            0 => write!(
                out,
                "{month} {day:2} {h:02}:{m:02}:{s:02} {} {}[{}]: {}",
                self.rng.pick(&HOSTS),
                self.rng.pick(&PROGRAMS),
                (r >> 8) % 32768,
                self.rng.pick(&SYSLOG_MSGS),
            ),
            1 => write!(
                out,
                "10.{}.{}.{} - - [{day:02}/{month}/2024:{h:02}:{m:02}:{s:02} +0000] \"{} {} HTTP/1.1\" {} {} \"-\" \"{}\" rt=0.{:03}",
                (r >> 8) % 256,
                (r >> 16) % 256,
                (r >> 24) % 256,
                self.rng.pick(&METHODS),
                self.rng.pick(&URLS),
                [200, 200, 200, 304, 404, 502][((r >> 32) % 6) as usize],
                (r >> 40) % 90_000,
                self.rng.pick(&AGENTS),
                frac,
            ),
            _ => write!(
                out,
                "2024-05-{day:02}T{h:02}:{m:02}:{s:02}.{frac:03}Z {} worker[{}]: {}",
                self.rng.pick(&HOSTS),
                (r >> 8) % 64,
                self.rng.pick(&LEVELS),
            ),
        };
        let body = len - suffix.len();
        while out.len() - start < body {
            out.push(b' ');
            out.extend_from_slice(self.rng.pick(&WORDS).as_bytes());
        }
        out.truncate(start + body);
        out.extend_from_slice(suffix.as_bytes());
    }
}

/// Writes whole lines of the data set to `path` until the next line would
/// pass `size` bytes. Returns (bytes, lines).
pub fn generate(path: &Path, size: u64) -> io::Result<(u64, u64)> {
    let mut file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut gen = LineGen::new();
    let mut line = Vec::with_capacity(512);
    let (mut bytes, mut seq) = (0u64, 0u64);
    loop {
        line.clear();
        gen.line(seq, &mut line);
        if bytes + line.len() as u64 > size {
            break;
        }
        file.write_all(&line)?;
        bytes += line.len() as u64;
        seq += 1;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok((bytes, seq))
}

/// Cuts `data` into `n` files `dir/fNNNNN.log` of about equal size, each
/// ending at a line end. Returns every file's path and length.
pub fn split(data: &Path, dir: &Path, n: usize) -> io::Result<Vec<(PathBuf, u64)>> {
    let total = std::fs::metadata(data)?.len();
    let each = (total / n as u64).max(1);
    let mut input = io::BufReader::with_capacity(1 << 20, File::open(data)?);
    let mut files = Vec::with_capacity(n);
    let mut line = Vec::with_capacity(512);
    for i in 0..n {
        let path = dir.join(format!("f{i:05}.log"));
        let mut out = BufWriter::new(File::create(&path)?);
        let mut len = 0u64;
        // The last file takes the rest.
        let limit = if i + 1 == n { u64::MAX } else { each };
        while len < limit {
            line.clear();
            if io::BufRead::read_until(&mut input, b'\n', &mut line)? == 0 {
                break;
            }
            out.write_all(&line)?;
            len += line.len() as u64;
        }
        out.flush()?;
        files.push((path, len));
    }
    Ok(files)
}

/// Writes `len` bytes to `path` and deletes it again (then the kernel has
/// page cache memory that was used before).
pub fn warm_up(path: &Path, len: u64) -> io::Result<()> {
    let buf = vec![b'.'; 1 << 20];
    let mut file = File::create(path)?;
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    drop(file);
    std::fs::remove_file(path)
}

/// Compares two files by streaming both. `Ok(None)` when they are equal,
/// else a description of the first difference.
pub fn compare(expected: &Path, actual: &Path) -> io::Result<Option<String>> {
    let (elen, alen) = (
        std::fs::metadata(expected)?.len(),
        match std::fs::metadata(actual) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Some(format!("{} does not exist", actual.display())))
            }
            Err(e) => return Err(e),
        },
    );
    if elen != alen {
        return Ok(Some(format!(
            "{} has {alen} bytes, expected {elen}",
            actual.display()
        )));
    }
    let (mut e, mut a) = (File::open(expected)?, File::open(actual)?);
    let (mut ebuf, mut abuf) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut e, &mut ebuf)?;
        let m = read_full(&mut a, &mut abuf)?;
        if n != m {
            return Ok(Some(format!(
                "{} changed size while compared",
                actual.display()
            )));
        }
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = ebuf[..n].iter().zip(&abuf[..n]).position(|(x, y)| x != y) {
            return Ok(Some(format!(
                "{} differs from {} at byte {}",
                actual.display(),
                expected.display(),
                offset + i as u64
            )));
        }
        offset += n as u64;
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// `"256MiB"`, `"1GiB"`, `"64M"`, `"4096"`: binary units, as the daemons' configs.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num
        .parse()
        .map_err(|_| format!("size `{text}`: expected a number with an optional unit"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("size `{text}`: unit must be B, KiB, MiB or GiB")),
    };
    num.checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("size `{text}`: out of range"))
}

/// The line number in a data-set line (without its `\n`): the digits after
/// the last `=`.
pub fn seq_of(line: &[u8]) -> Option<u64> {
    let eq = memchr::memrchr(b'=', line)?;
    std::str::from_utf8(&line[eq + 1..]).ok()?.parse().ok()
}

pub const MIB: f64 = (1u64 << 20) as f64;
pub const GIB: f64 = (1u64 << 30) as f64;
