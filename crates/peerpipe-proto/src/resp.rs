//! RESP2, the Redis serialization protocol: commands out, replies in.
//!
//! [`encode_command`] writes a command as an array of bulk strings, the only
//! form Redis accepts from clients. [`decode`] parses one reply from the front
//! of a buffer and says how many bytes it took, or that more bytes are needed.
//!
//! The decoder is strict and bounded, since its input comes off the network:
//! lines end in `\r\n` and nothing else, integers and lengths are plain decimal
//! without overflow, a bulk string holds at most [`MAX_BULK_LEN`] bytes, an array
//! at most [`MAX_ARRAY_LEN`] elements, arrays nest at most [`MAX_DEPTH`] deep,
//! and a status or error line is at most [`MAX_LINE_LEN`] bytes. It never
//! panics, and what it allocates is proportional to the bytes it was given,
//! whatever lengths those bytes declare.
//!
//! ```
//! use peerpipe_proto::resp::{self, Reply};
//!
//! let mut out = Vec::new();
//! resp::encode_command(&[b"GET", b"greeting"], &mut out);
//! assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n");
//!
//! let input = b"$5\r\nhello\r\n+OK\r\n";
//! let (reply, used) = resp::decode(input)?.expect("a complete reply");
//! assert_eq!(reply.as_bytes(), Some(&b"hello"[..]));
//! assert_eq!(resp::decode(&input[used..])?, Some((Reply::Status("OK".into()), 5)));
//! assert_eq!(resp::decode(b"$5\r\nhel")?, None); // incomplete: read more
//! # Ok::<(), resp::RespError>(())
//! ```

use bytes::Bytes;

/// The longest bulk string [`decode`] accepts: 64 MiB.
pub const MAX_BULK_LEN: usize = 64 * 1024 * 1024;
/// The most elements an array may declare for [`decode`]: 1 048 576.
pub const MAX_ARRAY_LEN: usize = 1 << 20;
/// How deep arrays may nest for [`decode`]: an array inside an array counts 2.
pub const MAX_DEPTH: usize = 8;
/// The longest status or error line [`decode`] accepts, `\r\n` excluded: 64 KiB.
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// The longest integer or length line: `-9223372036854775808` has 20 characters.
const MAX_NUMBER_LEN: usize = 20;
/// The fewest bytes an element takes on the wire (`+\r\n`), which bounds the
/// room reserved for an array by what the buffer can actually hold.
const MIN_ELEMENT_LEN: usize = 3;

/// One Redis reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A nil bulk string (`$-1`) or nil array (`*-1`): "no value".
    Nil,
    /// A status line (`+OK`). Bytes that are not UTF-8 are replaced with U+FFFD.
    Status(String),
    /// An error line (`-ERR unknown command`), without the `-`. Bytes that are
    /// not UTF-8 are replaced with U+FFFD.
    Error(String),
    /// An integer (`:42`).
    Int(i64),
    /// A bulk string (`$5\r\nhello`): binary-safe bytes.
    Bulk(Bytes),
    /// An array of replies (`*2 ...`).
    Array(Vec<Reply>),
}

impl Reply {
    /// The integer, if this is [`Reply::Int`].
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The bytes of a [`Reply::Bulk`] or [`Reply::Status`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(b) => Some(b),
            Reply::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The text of a [`Reply::Status`], or of a [`Reply::Bulk`] that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Status(s) => Some(s),
            Reply::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The elements, if this is [`Reply::Array`].
    pub fn into_array(self) -> Option<Vec<Reply>> {
        match self {
            Reply::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// Why [`decode`] refused its input. The stream cannot be resynchronised after
/// any of these: drop the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespError {
    /// The reply starts with a byte that is none of `+ - : $ *`.
    #[error("unknown RESP reply type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A line holds a lone `\r` or `\n` rather than ending in `\r\n`.
    #[error("RESP line not terminated by \\r\\n")]
    BadLineEnd,
    /// The bytes of a bulk string are not followed by `\r\n`.
    #[error("RESP bulk string not followed by \\r\\n")]
    BadBulkEnd,
    /// A status or error line is longer than [`MAX_LINE_LEN`].
    #[error("RESP line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    /// An integer or length is not an optional `-` and decimal digits, or does
    /// not fit in 64 bits.
    #[error("malformed RESP integer")]
    BadInteger,
    /// A bulk string or array length below -1.
    #[error("invalid RESP length {0}")]
    BadLength(i64),
    /// A bulk string longer than [`MAX_BULK_LEN`].
    #[error("RESP bulk string of {0} bytes is over the {MAX_BULK_LEN}-byte limit")]
    BulkTooLong(i64),
    /// An array of more than [`MAX_ARRAY_LEN`] elements.
    #[error("RESP array of {0} elements is over the {MAX_ARRAY_LEN}-element limit")]
    ArrayTooLong(i64),
    /// Arrays nested more than [`MAX_DEPTH`] deep.
    #[error("RESP arrays nested more than {MAX_DEPTH} deep")]
    TooDeep,
}

/// Appends `args` to `out` as one command: a RESP array of bulk strings.
/// `args` should not be empty (Redis ignores an empty command without a reply).
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.reserve(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.push(b'*');
    push_decimal(args.len(), out);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_decimal(arg.len(), out);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_decimal(mut n: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Parses one reply from the front of `buf`: `Ok(Some((reply, bytes used)))`,
/// or `Ok(None)` if `buf` holds only the beginning of a reply (read more and
/// call again with the longer buffer), or an error if `buf` cannot be the start
/// of a valid reply within the limits of this module.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    let mut pos = 0;
    Ok(reply(buf, &mut pos, 1)?.map(|r| (r, pos)))
}

/// Parses the reply at `*pos` and moves `*pos` past it; `depth` is 1 for a
/// reply that is not inside an array. `*pos` is meaningless after `Ok(None)`.
fn reply(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Reply>, RespError> {
    let Some(&kind) = buf.get(*pos) else {
        return Ok(None);
    };
    *pos += 1;
    match kind {
        b'+' | b'-' => {
            let Some(line) = line(buf, pos, MAX_LINE_LEN, RespError::LineTooLong)? else {
                return Ok(None);
            };
            let text = String::from_utf8_lossy(line).into_owned();
            Ok(Some(if kind == b'+' {
                Reply::Status(text)
            } else {
                Reply::Error(text)
            }))
        }
        b':' => Ok(number(buf, pos)?.map(Reply::Int)),
        b'$' => {
            let Some(len) = number(buf, pos)? else {
                return Ok(None);
            };
            let len = match length(len, MAX_BULK_LEN, RespError::BulkTooLong)? {
                Some(len) => len,
                None => return Ok(Some(Reply::Nil)),
            };
            let start = *pos;
            // `len` is at most 64 MiB and `start` at most `buf.len()`: no overflow.
            let end = start + len;
            match buf.get(end..end + 2) {
                Some(b"\r\n") => {}
                Some(_) => return Err(RespError::BadBulkEnd),
                None => {
                    // Incomplete, unless the bytes after the data already show
                    // that they are not `\r\n`.
                    if buf.get(end).is_some_and(|&b| b != b'\r') {
                        return Err(RespError::BadBulkEnd);
                    }
                    return Ok(None);
                }
            }
            *pos = end + 2;
            Ok(Some(Reply::Bulk(Bytes::copy_from_slice(&buf[start..end]))))
        }
        b'*' => {
            if depth > MAX_DEPTH {
                return Err(RespError::TooDeep);
            }
            let Some(len) = number(buf, pos)? else {
                return Ok(None);
            };
            let len = match length(len, MAX_ARRAY_LEN, RespError::ArrayTooLong)? {
                Some(len) => len,
                None => return Ok(Some(Reply::Nil)),
            };
            // Room for what the buffer can hold, not for what the peer declares.
            let room = buf.len().saturating_sub(*pos) / MIN_ELEMENT_LEN;
            let mut items = Vec::with_capacity(len.min(room));
            for _ in 0..len {
                match reply(buf, pos, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            Ok(Some(Reply::Array(items)))
        }
        other => Err(RespError::UnknownType(other)),
    }
}

/// Checks a declared bulk or array length: `None` for -1 (nil).
fn length(
    len: i64,
    max: usize,
    too_long: fn(i64) -> RespError,
) -> Result<Option<usize>, RespError> {
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(Some(n)),
        Ok(_) => Err(too_long(len)),
        Err(_) if len == -1 => Ok(None),
        Err(_) => Err(RespError::BadLength(len)),
    }
}

/// The line at `*pos` without its `\r\n`, moving `*pos` past the `\r\n`; `None`
/// if the `\r\n` has not arrived yet. A line longer than `max` is `too_long`.
fn line<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    max: usize,
    too_long: RespError,
) -> Result<Option<&'a [u8]>, RespError> {
    let start = *pos;
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(max + 2)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if window[i] == b'\n' => Err(RespError::BadLineEnd),
        Some(i) => match window.get(i + 1) {
            Some(b'\n') if i <= max => {
                *pos = start + i + 2;
                Ok(Some(&window[..i]))
            }
            Some(b'\n') => Err(too_long),
            Some(_) => Err(RespError::BadLineEnd),
            None if i > max => Err(too_long),
            None => Ok(None),
        },
        None if window.len() > max => Err(too_long),
        None => Ok(None),
    }
}

/// The integer line at `*pos`: an optional `-` and 1 to 19 decimal digits that
/// fit in an `i64`.
fn number(buf: &[u8], pos: &mut usize) -> Result<Option<i64>, RespError> {
    let start = *pos;
    let Some(text) = line(buf, pos, MAX_NUMBER_LEN, RespError::BadInteger)? else {
        // Refuse early what can never become a number.
        let rest = buf.get(start..).unwrap_or_default();
        let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
        let digits = rest.strip_prefix(b"-").unwrap_or(rest);
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(RespError::BadInteger);
        }
        return Ok(None);
    };
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.is_empty() {
        return Err(RespError::BadInteger);
    }
    // Accumulated as a negative number, so that i64::MIN fits.
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::BadInteger);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_sub(i64::from(d - b'0')))
            .ok_or(RespError::BadInteger)?;
    }
    if negative {
        Ok(Some(n))
    } else {
        n.checked_neg().map(Some).ok_or(RespError::BadInteger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Reply {
        let (reply, used) = decode(input).unwrap().unwrap();
        assert_eq!(
            used,
            input.len(),
            "all of {:?} used",
            String::from_utf8_lossy(input)
        );
        reply
    }

    fn err(input: &[u8]) -> RespError {
        decode(input).unwrap_err()
    }

    #[test]
    fn every_reply_type() {
        assert_eq!(one(b"+OK\r\n"), Reply::Status("OK".into()));
        assert_eq!(one(b"+\r\n"), Reply::Status(String::new()));
        assert_eq!(
            one(b"-ERR unknown command 'x'\r\n"),
            Reply::Error("ERR unknown command 'x'".into())
        );
        assert_eq!(one(b":0\r\n"), Reply::Int(0));
        assert_eq!(one(b":-17\r\n"), Reply::Int(-17));
        assert_eq!(one(b":9223372036854775807\r\n"), Reply::Int(i64::MAX));
        assert_eq!(one(b":-9223372036854775808\r\n"), Reply::Int(i64::MIN));
        assert_eq!(
            one(b"$5\r\nhello\r\n"),
            Reply::Bulk(Bytes::from_static(b"hello"))
        );
        assert_eq!(one(b"$0\r\n\r\n"), Reply::Bulk(Bytes::new()));
        assert_eq!(
            one(b"$4\r\na\r\nb\r\n"),
            Reply::Bulk(Bytes::from_static(b"a\r\nb")),
            "bulk strings are binary-safe"
        );
        assert_eq!(one(b"$-1\r\n"), Reply::Nil);
        assert_eq!(one(b"*-1\r\n"), Reply::Nil);
        assert_eq!(one(b"*0\r\n"), Reply::Array(vec![]));
        assert_eq!(
            one(b"*3\r\n:1\r\n$-1\r\n*1\r\n+x\r\n"),
            Reply::Array(vec![
                Reply::Int(1),
                Reply::Nil,
                Reply::Array(vec![Reply::Status("x".into())])
            ])
        );
        assert_eq!(
            one(b"+caf\xc3\xa9\xff\r\n"),
            Reply::Status("café\u{fffd}".into())
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(Reply::Int(3).as_int(), Some(3));
        assert_eq!(Reply::Nil.as_int(), None);
        assert_eq!(
            Reply::Bulk(Bytes::from_static(b"\xff")).as_bytes(),
            Some(&b"\xff"[..])
        );
        assert_eq!(Reply::Status("OK".into()).as_bytes(), Some(&b"OK"[..]));
        assert_eq!(Reply::Bulk(Bytes::from_static(b"\xff")).as_str(), None);
        assert_eq!(Reply::Bulk(Bytes::from_static(b"hi")).as_str(), Some("hi"));
        assert_eq!(Reply::Error("ERR".into()).as_str(), None);
        assert_eq!(
            Reply::Array(vec![Reply::Nil]).into_array(),
            Some(vec![Reply::Nil])
        );
        assert_eq!(Reply::Nil.into_array(), None);
    }

    #[test]
    fn replies_follow_one_another() {
        let input = b":1\r\n$2\r\nab\r\n*1\r\n-E\r\n";
        let (a, n) = decode(input).unwrap().unwrap();
        assert_eq!((a, n), (Reply::Int(1), 4));
        let (b, m) = decode(&input[n..]).unwrap().unwrap();
        assert_eq!((b, m), (Reply::Bulk(Bytes::from_static(b"ab")), 8));
        let (c, k) = decode(&input[n + m..]).unwrap().unwrap();
        assert_eq!(c, Reply::Array(vec![Reply::Error("E".into())]));
        assert_eq!(n + m + k, input.len());
        assert_eq!(decode(b"").unwrap(), None);
    }

    #[test]
    fn incomplete_at_every_split_point() {
        let input: &[u8] = b"*5\r\n+OK\r\n$5\r\nhe\r\no\r\n*2\r\n:-12\r\n$-1\r\n*-1\r\n-ERR x\r\n";
        let whole = one(input);
        for cut in 0..input.len() {
            assert_eq!(decode(&input[..cut]), Ok(None), "cut at {cut}");
        }
        // With trailing bytes, the same reply and length.
        let mut longer = input.to_vec();
        longer.extend_from_slice(b"+next\r\n");
        assert_eq!(decode(&longer).unwrap(), Some((whole, input.len())));
    }

    #[test]
    fn bulk_limit() {
        let at_limit = format!("${MAX_BULK_LEN}\r\n");
        assert_eq!(decode(at_limit.as_bytes()), Ok(None));
        let over = format!("${}\r\n", MAX_BULK_LEN + 1);
        assert_eq!(
            err(over.as_bytes()),
            RespError::BulkTooLong(MAX_BULK_LEN as i64 + 1)
        );
        assert_eq!(
            err(b"$9223372036854775807\r\n"),
            RespError::BulkTooLong(i64::MAX)
        );
    }

    #[test]
    fn array_limit_and_no_allocation_from_declared_lengths() {
        let at_limit = format!("*{MAX_ARRAY_LEN}\r\n:1\r\n");
        assert_eq!(decode(at_limit.as_bytes()), Ok(None));
        let over = format!("*{}\r\n", MAX_ARRAY_LEN + 1);
        assert_eq!(
            err(over.as_bytes()),
            RespError::ArrayTooLong(MAX_ARRAY_LEN as i64 + 1)
        );
        // A full array at the limit decodes.
        let mut full = format!("*{MAX_ARRAY_LEN}\r\n").into_bytes();
        for _ in 0..MAX_ARRAY_LEN {
            full.extend_from_slice(b"+\r\n");
        }
        match one(&full) {
            Reply::Array(items) => assert_eq!(items.len(), MAX_ARRAY_LEN),
            other => panic!("not an array: {other:?}"),
        }
    }

    #[test]
    fn depth_limit() {
        let nested = |levels: usize| {
            let mut s = "*1\r\n".repeat(levels).into_bytes();
            s.extend_from_slice(b":7\r\n");
            s
        };
        // MAX_DEPTH arrays, one inside the other, decode.
        let mut reply = one(&nested(MAX_DEPTH));
        for _ in 0..MAX_DEPTH {
            reply = reply.into_array().unwrap().remove(0);
        }
        assert_eq!(reply, Reply::Int(7));
        assert_eq!(err(&nested(MAX_DEPTH + 1)), RespError::TooDeep);
        // Refused as soon as the deeper array starts, before it is complete.
        assert_eq!(
            err(&nested(MAX_DEPTH + 1)[..4 * (MAX_DEPTH + 1)]),
            RespError::TooDeep
        );
        // Even an empty or nil array is one level too many there.
        for deepest in [&b"*0\r\n"[..], b"*-1\r\n"] {
            let mut s = "*1\r\n".repeat(MAX_DEPTH).into_bytes();
            s.extend_from_slice(deepest);
            assert_eq!(err(&s), RespError::TooDeep);
        }
    }

    #[test]
    fn line_limit() {
        let mut ok = b"+".to_vec();
        ok.extend(std::iter::repeat_n(b'a', MAX_LINE_LEN));
        assert_eq!(decode(&ok), Ok(None));
        ok.extend_from_slice(b"\r\n");
        assert!(matches!(one(&ok), Reply::Status(s) if s.len() == MAX_LINE_LEN));
        let mut long = b"-".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE_LEN));
        assert_eq!(decode(&long), Ok(None), "the \\r may come next");
        long.push(b'a');
        assert_eq!(err(&long), RespError::LineTooLong, "refused before its end");
        long.truncate(MAX_LINE_LEN + 2);
        long.extend_from_slice(b"\r\n");
        assert_eq!(err(&long), RespError::LineTooLong);
    }

    #[test]
    fn malformed() {
        // Type bytes.
        assert_eq!(err(b"!x\r\n"), RespError::UnknownType(b'!'));
        assert_eq!(err(b"\r\n"), RespError::UnknownType(b'\r'));
        assert_eq!(err(b"*1\r\n?\r\n"), RespError::UnknownType(b'?'));
        // Line ends.
        assert_eq!(err(b"+OK\n"), RespError::BadLineEnd);
        assert_eq!(err(b"+OK\rX"), RespError::BadLineEnd);
        assert_eq!(err(b":1\n"), RespError::BadLineEnd);
        assert_eq!(err(b"$1\r\nab\r\n"), RespError::BadBulkEnd);
        assert_eq!(err(b"$1\r\nab"), RespError::BadBulkEnd);
        assert_eq!(err(b"$1\r\na\rx"), RespError::BadBulkEnd);
        assert_eq!(err(b"$1\r\na\n\r"), RespError::BadBulkEnd);
        // Integers and lengths.
        for bad in [
            &b":\r\n"[..],
            b":-\r\n",
            b":+1\r\n",
            b": 1\r\n",
            b":1 \r\n",
            b":1.5\r\n",
            b":--1\r\n",
            b":0x10\r\n",
            b":9223372036854775808\r\n",
            b":-9223372036854775809\r\n",
            b":000000000000000000001\r\n",
            b"$abc\r\n",
            b"*1x",
            b":12a",
        ] {
            assert_eq!(
                err(bad),
                RespError::BadInteger,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(err(b":123456789012345678901"), RespError::BadInteger);
        assert_eq!(err(b"$-2\r\n"), RespError::BadLength(-2));
        assert_eq!(err(b"*-5\r\n"), RespError::BadLength(-5));
        assert_eq!(err(&b"*2\r\n:1\r\n$-3\r\n"[..]), RespError::BadLength(-3));
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode_command(&[b"SET", b"k", b""], &mut out);
        encode_command(&[b"GET", &[0, 13, 10]], &mut out);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*2\r\n$3\r\nGET\r\n$3\r\n\0\r\n\r\n"
        );
        let big = vec![b'x'; 1234567];
        out.clear();
        encode_command(&[&big], &mut out);
        assert!(out.starts_with(b"*1\r\n$1234567\r\nxxx"));
        assert_eq!(out.len(), 4 + 10 + 1234567 + 2);
    }
}
