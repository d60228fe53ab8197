//! Go's `encoding/json` decoding into typed structs, for the JSON fixture files that upstream's
//! `qdisc` and `wifi` collectors read instead of netlink (`--collector.qdisc.fixtures`,
//! `--collector.wifi.fixtures`); not a collector. What Go does and is kept here:
//!
//! - an object's keys are taken in document order, each assigned to the field whose name it
//!   equals, or else equals ignoring case (`bytes.EqualFold`: `K` U+212A and `ſ` U+017F fold to
//!   ASCII letters too); unknown keys are ignored; a repeated key assigns again (last wins), and
//!   an object decoded into a struct field merges into it;
//! - `null` leaves a number, string or struct field as it was and empties a slice;
//! - an integer field takes an integer literal only (`1.0` and `1e3` are errors, as in Go's
//!   `strconv.ParseInt`), within the field's bit size; an unsigned one takes no minus sign;
//! - `[]byte` fields (`net.HardwareAddr`) are standard base64 with padding (`\r` and `\n`
//!   skipped), or an array of byte values;
//! - invalid UTF-8 becomes U+FFFD, one per byte, as Go's decoder replaces it in strings (outside
//!   strings it is a syntax error either way).
//!
//! Any type mismatch is an error (Go finishes the value and then reports the first mismatch; the
//! collectors return that error either way). Two differences: lone UTF-16 surrogates in `\u`
//! escapes are an error here where Go substitutes U+FFFD, and `-0` is refused for an integer
//! (serde_json reads it as a float) where Go takes it as 0. Files are read up to [`MAX_FILE`]
//! bytes.
use std::{io::Read as _, path::Path};

use anyhow::Context as _;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// The largest fixture file read (upstream reads any size; these are hand-written test files).
pub const MAX_FILE: u64 = 16 << 20;

/// A JSON document with its objects' keys in document order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// A JSON number as serde_json reads it: non-negative integers, negative ones, and everything
/// else (fractions, exponents, integers out of 64-bit range, and `-0`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Unsigned(u64),
    Negative(i64),
    Float(f64),
}

impl Json {
    /// The JSON type, as Go names it in its errors.
    fn describe(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "bool",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Json, E> {
        Ok(Json::Bool(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Json, E> {
        Ok(Json::Number(Number::Unsigned(value)))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Json, E> {
        // serde_json calls this for literals with a minus sign only.
        Ok(Json::Number(Number::Negative(value)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Json, E> {
        Ok(Json::Number(Number::Float(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Json, E> {
        Ok(Json::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Json, E> {
        Ok(Json::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut pairs = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            pairs.push((key, value));
        }
        Ok(Json::Object(pairs))
    }
}

/// Go's `os.ReadFile` of a fixture file, refusing files over [`MAX_FILE`] bytes. The I/O error
/// keeps its kind (a missing file is `NotFound`, which callers tell apart).
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE} bytes"),
        ));
    }
    Ok(bytes)
}

/// One JSON document (serde_json's nesting limit keeps recursion bounded).
pub fn parse(bytes: &[u8]) -> anyhow::Result<Json> {
    let text = replace_invalid_utf8(bytes);
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let value = Json::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// `bytes` as UTF-8 with each byte of an invalid sequence replaced by U+FFFD, as Go's
/// `utf8.DecodeRune` steps over them.
fn replace_invalid_utf8(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for _ in chunk.invalid() {
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    text
}

/// The Go type a JSON value is decoded into.
#[derive(Debug)]
pub enum Kind {
    /// A signed integer of this many bits (`int` is 64).
    Int(u32),
    /// An unsigned integer of this many bits.
    Uint(u32),
    String,
    /// `[]byte`.
    Bytes,
    /// A struct of this name and fields.
    Struct(&'static str, &'static [Field]),
    /// A slice of values (`null` elements decode to the zero value).
    Slice(&'static Kind),
    /// A slice of pointers (`null` elements stay nil).
    PointerSlice(&'static Kind),
}

/// A struct field: its Go name and type.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
}

impl Field {
    pub const fn new(name: &'static str, kind: Kind) -> Self {
        Self { name, kind }
    }
}

/// A decoded Go value.
#[derive(Clone, Debug, PartialEq)]
pub enum Go {
    Int(i64),
    Uint(u64),
    String(String),
    Bytes(Vec<u8>),
    /// Field values, in the order of the struct's fields.
    Struct(Vec<Go>),
    Slice(Vec<Go>),
    /// A pointer slice's elements; `None` for nil.
    PointerSlice(Vec<Option<Go>>),
}

impl Go {
    /// The zero value of `kind`.
    pub fn zero(kind: &Kind) -> Go {
        match kind {
            Kind::Int(_) => Go::Int(0),
            Kind::Uint(_) => Go::Uint(0),
            Kind::String => Go::String(String::new()),
            Kind::Bytes => Go::Bytes(Vec::new()),
            Kind::Struct(_, fields) => {
                Go::Struct(fields.iter().map(|f| Go::zero(&f.kind)).collect())
            }
            Kind::Slice(_) => Go::Slice(Vec::new()),
            Kind::PointerSlice(_) => Go::PointerSlice(Vec::new()),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Go::Int(value) => *value,
            _ => 0,
        }
    }

    pub fn uint(&self) -> u64 {
        match self {
            Go::Uint(value) => *value,
            _ => 0,
        }
    }

    pub fn str(&self) -> &str {
        match self {
            Go::String(value) => value,
            _ => "",
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Go::Bytes(value) => value,
            _ => &[],
        }
    }

    /// Field `index` of a struct value.
    pub fn field(&self, index: usize) -> &Go {
        const ZERO: Go = Go::Int(0);
        match self {
            Go::Struct(fields) => fields.get(index).unwrap_or(&ZERO),
            _ => &ZERO,
        }
    }
}

/// `json.Unmarshal(bytes, &value)` for a value of `kind`, from its zero value.
pub fn unmarshal(bytes: &[u8], kind: &Kind) -> anyhow::Result<Go> {
    let json = parse(bytes)?;
    let mut value = Go::zero(kind);
    decode_into(&mut value, &json, kind, &describe_kind(kind))?;
    Ok(value)
}

/// [`read_file`] and [`unmarshal`], with errors naming the file.
pub fn unmarshal_file(path: &Path, kind: &Kind) -> anyhow::Result<Go> {
    let bytes = read_file(path).with_context(|| format!("reading {}", path.display()))?;
    unmarshal(&bytes, kind).with_context(|| format!("decoding {}", path.display()))
}

fn describe_kind(kind: &Kind) -> String {
    match kind {
        Kind::Int(64) => "int".to_owned(),
        Kind::Int(bits) => format!("int{bits}"),
        Kind::Uint(bits) => format!("uint{bits}"),
        Kind::String => "string".to_owned(),
        Kind::Bytes => "[]uint8".to_owned(),
        Kind::Struct(name, _) => (*name).to_owned(),
        Kind::Slice(element) => format!("[]{}", describe_kind(element)),
        Kind::PointerSlice(element) => format!("[]*{}", describe_kind(element)),
    }
}

fn mismatch(json: &Json, kind: &Kind, at: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "json: cannot unmarshal {} into Go value {at} of type {}",
        json.describe(),
        describe_kind(kind)
    )
}

/// Decodes `json` into `target`, as Go decodes into an existing value of `kind`.
fn decode_into(target: &mut Go, json: &Json, kind: &Kind, at: &str) -> anyhow::Result<()> {
    if let Json::Null = json {
        // Go: null empties slices (and pointers, maps, interfaces); other values stay.
        if matches!(kind, Kind::Bytes | Kind::Slice(_) | Kind::PointerSlice(_)) {
            *target = Go::zero(kind);
        }
        return Ok(());
    }
    match kind {
        Kind::Int(bits) => {
            let value = match json {
                Json::Number(Number::Unsigned(value)) => i64::try_from(*value).ok(),
                Json::Number(Number::Negative(value)) => Some(*value),
                _ => None,
            };
            let value = value
                .filter(|value| {
                    *bits >= 64 || (*value >> (bits - 1)) == 0 || (*value >> (bits - 1)) == -1
                })
                .ok_or_else(|| mismatch(json, kind, at))?;
            *target = Go::Int(value);
        }
        Kind::Uint(bits) => {
            let Json::Number(Number::Unsigned(value)) = json else {
                return Err(mismatch(json, kind, at));
            };
            if *bits < 64 && (*value >> bits) != 0 {
                return Err(mismatch(json, kind, at));
            }
            *target = Go::Uint(*value);
        }
        Kind::String => {
            let Json::String(value) = json else {
                return Err(mismatch(json, kind, at));
            };
            *target = Go::String(value.clone());
        }
        Kind::Bytes => match json {
            Json::String(text) => {
                let bytes = base64_std(text)
                    .ok_or_else(|| anyhow::anyhow!("{at}: illegal base64 data in {text:?}"))?;
                *target = Go::Bytes(bytes);
            }
            Json::Array(items) => {
                let mut bytes = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let mut byte = Go::Uint(0);
                    decode_into(&mut byte, item, &Kind::Uint(8), &format!("{at}[{index}]"))?;
                    bytes.push(byte.uint() as u8);
                }
                *target = Go::Bytes(bytes);
            }
            _ => return Err(mismatch(json, kind, at)),
        },
        Kind::Struct(name, fields) => {
            let Json::Object(pairs) = json else {
                return Err(mismatch(json, kind, at));
            };
            if !matches!(target, Go::Struct(values) if values.len() == fields.len()) {
                *target = Go::zero(kind);
            }
            let Go::Struct(values) = target else {
                return Err(mismatch(json, kind, at));
            };
            for (key, value) in pairs {
                let Some(index) = field_index(fields, key) else {
                    continue;
                };
                let field = &fields[index];
                decode_into(
                    &mut values[index],
                    value,
                    &field.kind,
                    &format!("{name}.{}", field.name),
                )?;
            }
        }
        Kind::Slice(element) => {
            let Json::Array(items) = json else {
                return Err(mismatch(json, kind, at));
            };
            let mut values = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let mut value = Go::zero(element);
                decode_into(&mut value, item, element, &format!("{at}[{index}]"))?;
                values.push(value);
            }
            *target = Go::Slice(values);
        }
        Kind::PointerSlice(element) => {
            let Json::Array(items) = json else {
                return Err(mismatch(json, kind, at));
            };
            let mut values = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                if let Json::Null = item {
                    values.push(None);
                    continue;
                }
                let mut value = Go::zero(element);
                decode_into(&mut value, item, element, &format!("{at}[{index}]"))?;
                values.push(Some(value));
            }
            *target = Go::PointerSlice(values);
        }
    }
    Ok(())
}

/// The field a key is assigned to: the one of that exact name, else the first whose name it
/// equals under Go's case folding.
fn field_index(fields: &[Field], key: &str) -> Option<usize> {
    fields
        .iter()
        .position(|field| field.name == key)
        .or_else(|| fields.iter().position(|field| fold_equal(key, field.name)))
}

/// `bytes.EqualFold(key, name)` for an ASCII `name` (every Go field name here is ASCII): the
/// only non-ASCII letters that fold to ASCII ones are the Kelvin sign and the long s.
fn fold_equal(key: &str, name: &str) -> bool {
    let mut name = name.bytes();
    for c in key.chars() {
        let Some(n) = name.next() else {
            return false;
        };
        let n = n.to_ascii_lowercase();
        let same = match c {
            '\u{212A}' => n == b'k',
            '\u{17F}' => n == b's',
            c if c.is_ascii() => (c as u8).to_ascii_lowercase() == n,
            _ => false,
        };
        if !same {
            return false;
        }
    }
    name.next().is_none()
}

/// Go's `base64.StdEncoding.DecodeString` (padded, trailing bits not checked, `\r` and `\n`
/// ignored anywhere); `None` for corrupt input.
fn base64_std(text: &str) -> Option<Vec<u8>> {
    let symbols: Vec<u8> = text.bytes().filter(|&b| b != b'\r' && b != b'\n').collect();
    if !symbols.len().is_multiple_of(4) {
        return None;
    }
    let value = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(symbols.len() / 4 * 3);
    let quanta = symbols.len() / 4;
    for (index, quantum) in symbols.chunks_exact(4).enumerate() {
        let last = index + 1 == quanta;
        let padding = match quantum {
            [_, _, b'=', b'='] if last => 2,
            [_, _, _, b'='] if last => 1,
            _ => 0,
        };
        let mut bits = 0u32;
        for &symbol in &quantum[..4 - padding] {
            bits = (bits << 6) | value(symbol)?;
        }
        bits <<= 6 * padding as u32;
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - padding]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INNER: Kind = Kind::Struct(
        "Inner",
        &[
            Field::new("Version", Kind::Int(64)),
            Field::new("Count", Kind::Uint(16)),
        ],
    );
    const OUTER: Kind = Kind::Struct(
        "Outer",
        &[
            Field::new("Name", Kind::String),
            Field::new("Small", Kind::Int(32)),
            Field::new("Big", Kind::Uint(64)),
            Field::new("Addr", Kind::Bytes),
            Field::new("Inner", INNER),
            Field::new("Skey", Kind::Uint(8)),
        ],
    );
    const LIST: Kind = Kind::Slice(&OUTER);
    const POINTERS: Kind = Kind::PointerSlice(&OUTER);

    fn outer(text: &str) -> anyhow::Result<Go> {
        unmarshal(text.as_bytes(), &OUTER)
    }

    #[test]
    fn keys_match_fields_as_go_matches_them() {
        let value = outer(
            r#"{"name":"a","NAME":"b","small":-7,"BIG":18446744073709551615,"unknown":[1,{}],
               "addr":"AQIDBAUG","inner":{"version":-1},"Inner":{"COUNT":65535},
               "ſkey":3}"#,
        )
        .unwrap();
        assert_eq!(value.field(0).str(), "b", "last key wins");
        assert_eq!(value.field(1).int(), -7);
        assert_eq!(value.field(2).uint(), u64::MAX);
        assert_eq!(value.field(3).bytes(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(value.field(4).field(0).int(), -1, "objects merge");
        assert_eq!(value.field(4).field(1).uint(), 65535);
        assert_eq!(value.field(5).uint(), 3, "long s folds to s");
        // Exact names take precedence only when the key is exactly a field's name.
        let value = outer(r#"{"Name":"x","name":"y"}"#).unwrap();
        assert_eq!(value.field(0).str(), "y");
        let value = outer("{\"S\u{212A}EY\":4,\"Small\":null,\"Addr\":null}").unwrap();
        assert_eq!(value.field(5).uint(), 4, "the Kelvin sign folds to k");
        assert_eq!(value.field(1).int(), 0);
    }

    #[test]
    fn null_keeps_values_but_empties_slices() {
        let value = outer(r#"{"Name":"a","Name":null,"Addr":"AQI=","Addr":null}"#).unwrap();
        assert_eq!(value.field(0).str(), "a");
        assert_eq!(value.field(3).bytes(), [] as [u8; 0]);
        assert_eq!(unmarshal(b"null", &LIST).unwrap(), Go::Slice(vec![]));
        let list = unmarshal(br#"[null, {"Small": 2}]"#, &LIST).unwrap();
        assert_eq!(
            list,
            Go::Slice(vec![Go::zero(&OUTER), outer(r#"{"Small":2}"#).unwrap()])
        );
        let pointers = unmarshal(br#"[null, {}]"#, &POINTERS).unwrap();
        assert_eq!(
            pointers,
            Go::PointerSlice(vec![None, Some(Go::zero(&OUTER))])
        );
        assert_eq!(outer("null").unwrap(), Go::zero(&OUTER));
    }

    #[test]
    fn numbers_follow_strconv() {
        for bad in [
            r#"{"Small": 1.0}"#,
            r#"{"Small": 1e3}"#,
            r#"{"Small": 2147483648}"#,
            r#"{"Small": -2147483649}"#,
            r#"{"Small": "1"}"#,
            r#"{"Small": true}"#,
            r#"{"Big": -1}"#,
            r#"{"Big": -0}"#,
            r#"{"Big": 18446744073709551616}"#,
            r#"{"Skey": 256}"#,
            r#"{"Inner": {"Count": 65536}}"#,
            r#"{"Name": 5}"#,
            r#"{"Inner": []}"#,
            r#"{"Addr": "AQI"}"#,
            r#"{"Addr": "A==="}"#,
            r#"{"Addr": "AQ=A"}"#,
            r#"{"Addr": [256]}"#,
            r#"{"Addr": 1}"#,
            r#"[]"#,
        ] {
            assert!(outer(bad).is_err(), "{bad}");
        }
        assert_eq!(
            outer(r#"{"Small": -2147483648}"#).unwrap().field(1).int(),
            i32::MIN as i64
        );
        assert_eq!(
            outer(r#"{"Small": 2147483647}"#).unwrap().field(1).int(),
            i32::MAX as i64
        );
        // serde_json reads `-0` as a float: refused, where Go's ParseInt takes it as 0.
        assert!(outer(r#"{"Small": -0}"#).is_err());
        assert_eq!(
            outer(r#"{"Addr": [1, 255]}"#).unwrap().field(3).bytes(),
            [1, 255]
        );
    }

    #[test]
    fn malformed_documents_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "[1,",
            "{\"Name\":\"a\"} x",
            "\u{1}",
            "{\"Name\":\"\\ud800\"}",
            "nul",
        ] {
            assert!(outer(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(100_000);
        assert!(unmarshal(deep.as_bytes(), &LIST).is_err());
        // Invalid UTF-8 inside a string: one U+FFFD per byte.
        let value = unmarshal(b"{\"Name\":\"a\xff\xfeb\"}", &OUTER).unwrap();
        assert_eq!(value.field(0).str(), "a\u{FFFD}\u{FFFD}b");
        assert!(unmarshal(b"\xff", &OUTER).is_err());
    }

    #[test]
    fn base64_as_go_decodes_it() {
        assert_eq!(base64_std("").unwrap(), b"");
        assert_eq!(
            base64_std("qrvM3e7/").unwrap(),
            [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
        );
        assert_eq!(base64_std("AQ==").unwrap(), [1]);
        assert_eq!(base64_std("AQI=").unwrap(), [1, 2]);
        assert_eq!(
            base64_std("AR==").unwrap(),
            [1],
            "trailing bits are not checked"
        );
        assert_eq!(base64_std("AQ\r\nI=").unwrap(), [1, 2]);
        for bad in ["A", "AQ", "AQ=", "====", "AQ==AQ==", "A-_=", "AQ ="] {
            assert!(base64_std(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn files_are_bounded() {
        let dir = std::env::temp_dir().join(format!("go-json-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = read_file(&dir.join("missing.json")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; MAX_FILE as usize + 1]).unwrap();
        assert_eq!(
            read_file(&big).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        std::fs::write(&big, br#"[{"Name":"x"}]"#).unwrap();
        let list = unmarshal_file(&big, &LIST).unwrap();
        assert_eq!(list, Go::Slice(vec![outer(r#"{"Name":"x"}"#).unwrap()]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
