//! Shortens the names that wasm-bindgen generates for the boundary between the dashboard's
//! wasm module and its JS glue.
//!
//! Every function the wasm imports from the glue is named like
//! `__wbg_setAttribute_f75317b2b5cabfb4`, and closure trampolines are exported as
//! `wasm_bindgen_f1d7d887694c14bd___convert__closures_____invoke___js_sys_…`. Each name is
//! written twice (the wasm's import or export section and the glue) and its 16-hex-digit
//! hash is random to a compressor: about 3 KB of the brotli'd bundle for nothing. The
//! names exist only for the two generated files to find each other, so renaming them
//! consistently in both changes nothing else.
//!
//! Only names carrying such a hash are touched: they are unique by construction, so
//! replacing them as whole identifiers in the glue cannot hit anything else. Names the
//! glue refers to in other ways (`memory`, `__wbindgen_start`) keep theirs.

use std::collections::BTreeMap;
use std::fmt;

/// Why a module or its glue could not be rewritten. The build stops on any of them: a
/// half-renamed pair would not link in the browser.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// Not a wasm binary (or not version 1).
    NotWasm,
    /// The binary ends inside a section, name or number.
    Truncated,
    /// A name is not UTF-8.
    BadName,
    /// An import of a kind this tool does not know how to skip.
    UnknownImportKind(u8),
    /// Table or memory limits with flags this tool does not know how to skip.
    UnknownLimits(u8),
    /// A generated name the wasm imports is absent from the glue: the glue is not the one
    /// wasm-bindgen wrote for this module.
    NotInGlue(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotWasm => f.write_str("not a WebAssembly 1.0 binary"),
            Self::Truncated => f.write_str("the wasm binary is truncated"),
            Self::BadName => f.write_str("an import or export name is not UTF-8"),
            Self::UnknownImportKind(k) => write!(f, "unknown import kind 0x{k:02x}"),
            Self::UnknownLimits(flags) => write!(f, "unknown limits flags 0x{flags:02x}"),
            Self::NotInGlue(name) => write!(
                f,
                "the wasm imports {name} but the JS glue never names it: is it the glue of this module?"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// The renamed pair, and the names given.
#[derive(Debug)]
pub struct Renamed {
    pub wasm: Vec<u8>,
    pub js: String,
    /// Old name → new name.
    pub names: BTreeMap<String, String>,
}

/// Whether wasm-bindgen generated `name` with a hash that makes it unique.
pub fn is_generated(name: &str) -> bool {
    let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let hashed_suffix = name
        .rsplit_once('_')
        .is_some_and(|(head, tail)| !head.is_empty() && hex16(tail));
    let hashed_prefix = name
        .strip_prefix("wasm_bindgen_")
        .and_then(|rest| rest.get(..16).zip(rest.get(16..)))
        .is_some_and(|(hash, rest)| hex16(hash) && rest.starts_with("___"));
    hashed_suffix || hashed_prefix
}

/// The `n`-th short name: `$0`, `$1`, … `$z`, `$10`, … (base 36; `$` keeps them apart from
/// anything a minifier or wasm-bindgen would write).
fn short_name(mut n: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits = Vec::new();
    loop {
        digits.push(DIGITS[n % 36]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    format!("${}", String::from_utf8_lossy(&digits))
}

/// Renames every generated import and export of `wasm`, and the same names in `js`.
pub fn rename(wasm: &[u8], js: &str) -> Result<Renamed, Error> {
    let mut names = BTreeMap::new();
    let mut out = Vec::with_capacity(wasm.len());
    let mut r = Reader { bytes: wasm, at: 0 };
    if r.take(8)? != b"\0asm\x01\0\0\0" {
        return Err(Error::NotWasm);
    }
    out.extend_from_slice(&wasm[..8]);
    let mut imported = Vec::new();
    while !r.done() {
        let id = r.byte()?;
        let len = r.leb()? as usize;
        let body = r.take(len)?;
        let body = match id {
            2 => rewrite_imports(body, &mut names, &mut imported)?,
            7 => rewrite_exports(body, &mut names)?,
            _ => body.to_vec(),
        };
        out.push(id);
        write_leb(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
    }
    // An import the glue does not provide would fail at instantiation; say so now.
    if let Some(missing) = imported
        .iter()
        .find(|n| find_identifier(js, n, 0).is_none())
    {
        return Err(Error::NotInGlue(missing.clone()));
    }
    let js = replace_identifiers(js, &names);
    Ok(Renamed {
        wasm: out,
        js,
        names,
    })
}

fn new_name(names: &mut BTreeMap<String, String>, old: &str) -> String {
    if !is_generated(old) {
        return old.to_owned();
    }
    let next = short_name(names.len());
    names.entry(old.to_owned()).or_insert(next).clone()
}

fn rewrite_imports(
    body: &[u8],
    names: &mut BTreeMap<String, String>,
    imported: &mut Vec<String>,
) -> Result<Vec<u8>, Error> {
    let mut r = Reader { bytes: body, at: 0 };
    let mut out = Vec::with_capacity(body.len());
    let count = r.leb()?;
    write_leb(&mut out, count);
    for _ in 0..count {
        let module = r.name()?;
        let field = r.name()?;
        let start = r.at;
        r.skip_import_type()?;
        write_name(&mut out, module);
        if is_generated(field) {
            imported.push(field.to_owned());
        }
        write_name(&mut out, &new_name(names, field));
        out.extend_from_slice(&body[start..r.at]);
    }
    out.extend_from_slice(&body[r.at..]);
    Ok(out)
}

fn rewrite_exports(body: &[u8], names: &mut BTreeMap<String, String>) -> Result<Vec<u8>, Error> {
    let mut r = Reader { bytes: body, at: 0 };
    let mut out = Vec::with_capacity(body.len());
    let count = r.leb()?;
    write_leb(&mut out, count);
    for _ in 0..count {
        let field = r.name()?;
        let start = r.at;
        r.byte()?;
        r.leb()?;
        write_name(&mut out, &new_name(names, field));
        out.extend_from_slice(&body[start..r.at]);
    }
    out.extend_from_slice(&body[r.at..]);
    Ok(out)
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// The first place from `from` where `name` stands as a whole identifier in `js`.
fn find_identifier(js: &str, name: &str, from: usize) -> Option<usize> {
    let bytes = js.as_bytes();
    let mut at = from;
    while let Some(i) = js.get(at..)?.find(name).map(|i| i + at) {
        let end = i + name.len();
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(end).copied();
        if !before.is_some_and(is_identifier_byte) && !after.is_some_and(is_identifier_byte) {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

fn replace_identifiers(js: &str, names: &BTreeMap<String, String>) -> String {
    let mut js = js.to_owned();
    for (old, new) in names {
        let mut out = String::with_capacity(js.len());
        let mut at = 0;
        while let Some(i) = find_identifier(&js, old, at) {
            out.push_str(&js[at..i]);
            out.push_str(new);
            at = i + old.len();
        }
        out.push_str(&js[at..]);
        js = out;
    }
    js
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.at.checked_add(n).ok_or(Error::Truncated)?;
        let s = self.bytes.get(self.at..end).ok_or(Error::Truncated)?;
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    /// An unsigned LEB128 number (also skips a signed one: only its length matters then).
    fn leb(&mut self) -> Result<u64, Error> {
        let (mut value, mut shift) = (0u64, 0u32);
        loop {
            let b = self.byte()?;
            if shift < 64 {
                value |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
    }

    fn name(&mut self) -> Result<&'a str, Error> {
        let len = self.leb()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| Error::BadName)
    }

    fn limits(&mut self) -> Result<(), Error> {
        // Bit 0: a maximum follows; bit 1: shared; bit 2: 64-bit (same LEB encoding).
        // Anything else (custom page sizes add a field) must not be skipped blindly.
        let flags = self.byte()?;
        if flags & !0x07 != 0 {
            return Err(Error::UnknownLimits(flags));
        }
        self.leb()?;
        if flags & 1 != 0 {
            self.leb()?;
        }
        Ok(())
    }

    fn reftype(&mut self) -> Result<(), Error> {
        // (ref null? heaptype) in the GC encoding; a single byte otherwise.
        if matches!(self.byte()?, 0x63 | 0x64) {
            self.leb()?;
        }
        Ok(())
    }

    fn skip_import_type(&mut self) -> Result<(), Error> {
        match self.byte()? {
            0 => self.leb().map(drop),
            1 => {
                self.reftype()?;
                self.limits()
            }
            2 => self.limits(),
            3 => {
                self.reftype()?;
                self.byte().map(drop)
            }
            4 => {
                self.byte()?;
                self.leb().map(drop)
            }
            kind => Err(Error::UnknownImportKind(kind)),
        }
    }
}

fn write_leb(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    write_leb(out, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
}

#[cfg(test)]
mod tests;
