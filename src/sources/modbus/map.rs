//! Register maps, pure: a device's configured registers become a read plan
//! (the fewest requests that cover them), and the answers to those requests
//! become reading fields. No I/O here, and nothing that can panic on a
//! device's answer.
//!
//! Planning: per table, values are sorted by address and joined greedily
//! into one request while the unused registers between them are at most
//! `max_gap` and the request stays within the protocol limit (125 registers,
//! 2000 bits, or less where a device needs it). Each value lies wholly in
//! exactly one request; the proptest below holds the plan to that.
//!
//! Decoding: registers are big-endian 16-bit words on the wire; a 32-bit
//! value takes two, high word first (`big`) or word-swapped (`little`). The
//! raw number is then scaled and offset, and typed by the kind's schema so a
//! polled reading is the same as an MQTT one: floats for measurements,
//! integers for counts, booleans for states.

use std::borrow::Cow;

use crate::config::{RegisterConfig, RegisterType, Table, WordOrder};
use crate::reading::{FieldName, FieldType, Kind, Value};

/// The protocol's limits on one read request.
pub const PROTOCOL_MAX_REGISTERS: u16 = 125;
/// The protocol's limit on bits (coils, discrete inputs) in one read request.
pub const PROTOCOL_MAX_BITS: u16 = 2000;

/// How requests may be formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unused registers (or bits) that may be read to join two neighbours.
    pub max_gap: u16,
    /// Most registers in one request.
    pub max_registers: u16,
    /// Most bits in one request.
    pub max_bits: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_gap: 0,
            max_registers: PROTOCOL_MAX_REGISTERS,
            max_bits: PROTOCOL_MAX_BITS,
        }
    }
}

impl Limits {
    fn max(&self, table: Table) -> u16 {
        if table.is_bits() {
            self.max_bits.clamp(1, PROTOCOL_MAX_BITS)
        } else {
            self.max_registers.clamp(1, PROTOCOL_MAX_REGISTERS)
        }
    }
}

/// One read request: `count` registers or bits of `table` from `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The table.
    pub table: Table,
    /// First address.
    pub address: u16,
    /// How many registers or bits.
    pub count: u16,
}

impl Request {
    /// One past the last address.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }
}

/// What the reading field's value is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    F64,
    I64,
    Bool,
}

/// A configured value, placed in its request.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The reading field.
    pub field: FieldName,
    /// Where it is.
    pub table: Table,
    /// Its first address.
    pub address: u16,
    /// How it is stored.
    pub ty: RegisterType,
    /// For `bit`: which bit.
    pub bit: u8,
    /// For 32-bit values.
    pub word_order: WordOrder,
    /// Multiplier.
    pub scale: f64,
    /// Addend.
    pub offset: f64,
    /// The request that reads it.
    pub request: usize,
    out: Out,
}

impl Point {
    /// One past its last address.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.width())
    }

    /// Registers (or bits) it occupies.
    pub fn width(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.ty.width()
        }
    }
}

/// Why registers cannot be planned; `check` finds the same problems for validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A register breaks a rule.
    #[error("register `{field}`: {message}")]
    Register {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The map is empty.
    #[error("the map has no registers")]
    Empty,
}

/// Why an answer cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer answers than requests, or a request's answer has the wrong shape.
    #[error("answer {request} has {got} values, {expected} expected")]
    Length {
        /// Index of the request.
        request: usize,
        /// What the request asked for.
        expected: usize,
        /// What came back.
        got: usize,
    },
    /// A float register holds NaN or infinity.
    #[error("field `{0}` is not a finite number")]
    NonFinite(String),
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Registers.
    Words(Vec<u16>),
    /// Coils or discrete inputs.
    Bits(Vec<bool>),
}

/// The requests that read a device's registers, and how to decode them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadPlan {
    requests: Vec<Request>,
    points: Vec<Point>,
}

/// Every problem of one register in a device of `kind`, as messages
/// (validation prefixes them with the key path).
pub fn check(r: &RegisterConfig, kind: Option<Kind>) -> Vec<String> {
    let mut out = Vec::new();
    if r.field.is_empty()
        || !r
            .field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        out.push(format!(
            "field `{}` may hold only ASCII letters, digits and _",
            r.field
        ));
    }
    if r.table.is_bits() && r.ty != RegisterType::Bool {
        out.push(format!(
            "a {} holds one bit: its type must be bool",
            r.table.as_str()
        ));
    }
    match (r.ty, r.bit) {
        (RegisterType::Bit, None) => out.push("type bit needs `bit` (0 to 15)".into()),
        (RegisterType::Bit, Some(b)) if b > 15 => out.push(format!("bit {b} is not 0 to 15")),
        (RegisterType::Bit, Some(_)) => {}
        (_, Some(_)) => out.push("`bit` is only for type bit".into()),
        (_, None) => {}
    }
    let width = if r.table.is_bits() { 1 } else { r.ty.width() };
    if u32::from(r.address) + u32::from(width) > 65_536 {
        out.push(format!(
            "address {} with its {width} registers runs past 65535",
            r.address
        ));
    }
    if !r.scale.is_finite() || r.scale == 0.0 || !r.offset.is_finite() {
        out.push("scale must be finite and not zero, offset finite".into());
    }
    if r.ty.is_bool() && (r.scale != 1.0 || r.offset != 0.0) {
        out.push("a boolean has no scale or offset".into());
    }
    if let Some((_, want)) = kind.and_then(|k| k.field_type(&r.field)) {
        let fits = match want {
            FieldType::Bool => r.ty.is_bool(),
            FieldType::F64 | FieldType::I64 => !r.ty.is_bool(),
            FieldType::Str => false,
        };
        if !fits {
            out.push(format!(
                "field `{}` of a {} is {}, which type {} cannot give",
                r.field,
                kind.map_or("device", Kind::as_str),
                match want {
                    FieldType::Bool => "a boolean",
                    FieldType::F64 | FieldType::I64 => "a number",
                    FieldType::Str => "a string",
                },
                r.ty.as_str()
            ));
        }
    }
    out
}

impl ReadPlan {
    /// Plans the reads of `registers` for a device of `kind`.
    pub fn build(
        kind: Kind,
        registers: &[RegisterConfig],
        limits: Limits,
    ) -> Result<Self, MapError> {
        if registers.is_empty() {
            return Err(MapError::Empty);
        }
        let mut points = Vec::with_capacity(registers.len());
        for r in registers {
            if let Some(message) = check(r, Some(kind)).into_iter().next() {
                return Err(MapError::Register {
                    field: r.field.clone(),
                    message,
                });
            }
            let (field, out): (FieldName, Out) = match kind.field_type(&r.field) {
                Some((name, FieldType::I64)) => (Cow::Borrowed(name), Out::I64),
                Some((name, FieldType::Bool)) => (Cow::Borrowed(name), Out::Bool),
                Some((name, _)) => (Cow::Borrowed(name), Out::F64),
                None if r.ty.is_bool() => (Cow::Owned(r.field.clone()), Out::Bool),
                None => (Cow::Owned(r.field.clone()), Out::F64),
            };
            points.push(Point {
                field,
                table: r.table,
                address: r.address,
                ty: r.ty,
                bit: r.bit.unwrap_or(0),
                word_order: r.word_order,
                scale: r.scale,
                offset: r.offset,
                request: 0,
                out,
            });
        }
        // Plan per table in address order; the points keep configuration order.
        let mut order: Vec<usize> = (0..points.len()).collect();
        order.sort_by_key(|&i| (points[i].table, points[i].address, points[i].width()));
        let mut requests: Vec<Request> = Vec::new();
        for i in order {
            let p = &points[i];
            let (start, end) = (u32::from(p.address), p.end());
            let max = u32::from(limits.max(p.table));
            if end - start > max {
                return Err(MapError::Register {
                    field: p.field.to_string(),
                    message: format!(
                        "needs {} registers, more than one request may read",
                        end - start
                    ),
                });
            }
            let joined = match requests.last_mut() {
                Some(r)
                    if r.table == p.table
                        && start <= r.end() + u32::from(limits.max_gap)
                        && end.max(r.end()) - u32::from(r.address) <= max =>
                {
                    // Fits: `count` stays within the limit checked just above.
                    r.count = (end.max(r.end()) - u32::from(r.address)) as u16;
                    true
                }
                _ => false,
            };
            if !joined {
                requests.push(Request {
                    table: p.table,
                    address: p.address,
                    count: (end - start) as u16,
                });
            }
            points[i].request = requests.len() - 1;
        }
        Ok(Self { requests, points })
    }

    /// The requests of one poll, in the order their answers are expected.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// The configured values.
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// Turns the answers (one per request, in order) into reading fields.
    pub fn decode(&self, answers: &[Answer]) -> Result<Vec<(FieldName, Value)>, DecodeError> {
        if answers.len() != self.requests.len() {
            return Err(DecodeError::Length {
                request: answers.len().min(self.requests.len()),
                expected: self.requests.len(),
                got: answers.len(),
            });
        }
        for (i, (req, answer)) in self.requests.iter().zip(answers).enumerate() {
            let got = match (req.table.is_bits(), answer) {
                (true, Answer::Bits(b)) => b.len(),
                (false, Answer::Words(w)) => w.len(),
                _ => 0,
            };
            if got < usize::from(req.count) {
                return Err(DecodeError::Length {
                    request: i,
                    expected: usize::from(req.count),
                    got,
                });
            }
        }
        let mut fields = Vec::with_capacity(self.points.len());
        for p in &self.points {
            let req = &self.requests[p.request];
            let at = usize::from(p.address - req.address);
            let value = match &answers[p.request] {
                Answer::Bits(bits) => Value::Bool(bits[at]),
                Answer::Words(words) => decode_words(p, &words[at..at + usize::from(p.width())])?,
            };
            fields.push((p.field.clone(), value));
        }
        Ok(fields)
    }
}

/// Decodes one value from its registers (exactly `p.width()` of them).
fn decode_words(p: &Point, w: &[u16]) -> Result<Value, DecodeError> {
    let pair = || match p.word_order {
        WordOrder::Big => (u32::from(w[0]) << 16) | u32::from(w[1]),
        WordOrder::Little => (u32::from(w[1]) << 16) | u32::from(w[0]),
    };
    let raw = match p.ty {
        RegisterType::Bool => return Ok(Value::Bool(w[0] != 0)),
        RegisterType::Bit => return Ok(Value::Bool((w[0] >> p.bit) & 1 == 1)),
        RegisterType::U16 => f64::from(w[0]),
        RegisterType::I16 => f64::from(w[0] as i16),
        RegisterType::U32 => f64::from(pair()),
        RegisterType::I32 => f64::from(pair() as i32),
        RegisterType::F32 => {
            let f = f32::from_bits(pair());
            if !f.is_finite() {
                return Err(DecodeError::NonFinite(p.field.to_string()));
            }
            // The float's shortest decimal form: 1.1f32 is stored as 1.1, not 1.100000023841858.
            f.to_string().parse::<f64>().unwrap_or(f64::from(f))
        }
    };
    let v = scale(raw, p.scale) + p.offset;
    if !v.is_finite() {
        return Err(DecodeError::NonFinite(p.field.to_string()));
    }
    Ok(match p.out {
        Out::I64 => Value::I64(v.round() as i64),
        Out::F64 | Out::Bool => Value::F64(v),
    })
}

/// `raw * scale`, dividing instead when the scale is 1/10, 1/100…: 615 × 0.1
/// gives 61.50000000000001 but 615 / 10 gives 61.5, as the data sheet means.
fn scale(raw: f64, scale: f64) -> f64 {
    if scale.abs() < 1.0 {
        let inverse = 1.0 / scale;
        if (inverse - inverse.round()).abs() < 1e-9 {
            return raw / inverse.round();
        }
    }
    raw * scale
}

/// The registers (or bit) that hold `value` at point `p`: the inverse of
/// decoding, for simulators (the demo's devices, the benchmark's).
pub fn encode(p: &Point, value: &Value) -> Answer {
    if p.table.is_bits() {
        return Answer::Bits(vec![value.as_bool().unwrap_or(false)]);
    }
    let number = match value {
        Value::Bool(b) => f64::from(u8::from(*b)),
        other => other.as_f64().unwrap_or(0.0),
    };
    let raw = (number - p.offset) / p.scale;
    let pair = |x: u32| {
        let (hi, lo) = ((x >> 16) as u16, x as u16);
        match p.word_order {
            WordOrder::Big => vec![hi, lo],
            WordOrder::Little => vec![lo, hi],
        }
    };
    Answer::Words(match p.ty {
        RegisterType::Bool => vec![u16::from(number != 0.0)],
        // Only this bit: the caller merges it into the register.
        RegisterType::Bit => vec![u16::from(number != 0.0) << p.bit],
        RegisterType::U16 => vec![raw.round() as u16],
        RegisterType::I16 => vec![(raw.round() as i16) as u16],
        RegisterType::U32 => pair(raw.round() as u32),
        RegisterType::I32 => pair((raw.round() as i32) as u32),
        RegisterType::F32 => pair((raw as f32).to_bits()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reg(field: &str, table: Table, address: u16, ty: RegisterType) -> RegisterConfig {
        RegisterConfig {
            field: field.into(),
            table,
            address,
            ty,
            bit: None,
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
        }
    }

    /// The kitchen-hood reference map of FEED.md.
    fn hood() -> Vec<RegisterConfig> {
        vec![
            RegisterConfig {
                scale: 0.1,
                ..reg("duct_temp_c", Table::Input, 0, RegisterType::I16)
            },
            RegisterConfig {
                scale: 0.01,
                ..reg("fan_current_a", Table::Input, 1, RegisterType::U16)
            },
            reg("grease_mg_m3", Table::Input, 2, RegisterType::F32),
            reg("co_ppm", Table::Input, 4, RegisterType::U16),
            RegisterConfig {
                scale: 0.1,
                ..reg("gas_lel_pct", Table::Input, 5, RegisterType::U16)
            },
            reg("fan_on", Table::Coil, 0, RegisterType::Bool),
        ]
    }

    fn check_plan(
        kind: Kind,
        regs: &[RegisterConfig],
        limits: Limits,
        expect: &[(Table, u16, u16)],
    ) {
        let plan = ReadPlan::build(kind, regs, limits).expect("plan");
        let got: Vec<_> = plan
            .requests()
            .iter()
            .map(|r| (r.table, r.address, r.count))
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn the_reference_hood_is_two_requests() {
        check_plan(
            Kind::Kitchen,
            &hood(),
            Limits::default(),
            &[(Table::Coil, 0, 1), (Table::Input, 0, 6)],
        );
    }

    #[test]
    fn gaps_and_limits_split_requests() {
        let regs = [
            reg("a", Table::Holding, 0, RegisterType::U16),
            reg("b", Table::Holding, 3, RegisterType::U32),
            reg("c", Table::Holding, 10, RegisterType::U16),
        ];
        let gap = |max_gap| Limits {
            max_gap,
            ..Limits::default()
        };
        check_plan(
            Kind::Labcab,
            &regs,
            gap(0),
            &[
                (Table::Holding, 0, 1),
                (Table::Holding, 3, 2),
                (Table::Holding, 10, 1),
            ],
        );
        check_plan(
            Kind::Labcab,
            &regs,
            gap(2),
            &[(Table::Holding, 0, 5), (Table::Holding, 10, 1)],
        );
        check_plan(Kind::Labcab, &regs, gap(5), &[(Table::Holding, 0, 11)]);
        let small = Limits {
            max_gap: 5,
            max_registers: 6,
            ..Limits::default()
        };
        check_plan(
            Kind::Labcab,
            &regs,
            small,
            &[(Table::Holding, 0, 5), (Table::Holding, 10, 1)],
        );
    }

    #[test]
    fn decodes_the_reference_hood() {
        let plan = ReadPlan::build(Kind::Kitchen, &hood(), Limits::default()).expect("plan");
        let grease = 1.1f32.to_bits();
        let answers = [
            Answer::Bits(vec![true, false, false, false, false, false, false, false]),
            Answer::Words(vec![
                (-123i16) as u16,
                320,
                (grease >> 16) as u16,
                grease as u16,
                4,
                7,
            ]),
        ];
        let fields = plan.decode(&answers).expect("decoded");
        assert_eq!(
            fields,
            vec![
                ("duct_temp_c".into(), Value::F64(-12.3)),
                ("fan_current_a".into(), Value::F64(3.2)),
                ("grease_mg_m3".into(), Value::F64(1.1)),
                ("co_ppm".into(), Value::F64(4.0)),
                ("gas_lel_pct".into(), Value::F64(0.7)),
                ("fan_on".into(), Value::Bool(true)),
            ]
        );
    }

    #[test]
    fn word_orders_bits_offsets_and_integers() {
        let regs = [
            RegisterConfig {
                word_order: WordOrder::Little,
                ..reg("voc_ppm", Table::Holding, 0, RegisterType::F32)
            },
            RegisterConfig {
                word_order: WordOrder::Little,
                ..reg("big_count", Table::Holding, 2, RegisterType::I32)
            },
            reg("u", Table::Holding, 4, RegisterType::U32),
            RegisterConfig {
                bit: Some(3),
                ..reg("locked", Table::Holding, 6, RegisterType::Bit)
            },
            RegisterConfig {
                scale: 0.5,
                offset: -10.0,
                ..reg("temp_c", Table::Holding, 7, RegisterType::U16)
            },
            reg("door_open", Table::Holding, 8, RegisterType::Bool),
        ];
        let plan = ReadPlan::build(Kind::Labcab, &regs, Limits::default()).expect("plan");
        let voc = 0.3f32.to_bits();
        let neg = (-70_000i32) as u32;
        let words = vec![
            voc as u16,
            (voc >> 16) as u16,
            neg as u16,
            (neg >> 16) as u16,
            1,
            2,
            0b1000,
            50,
            9,
        ];
        let fields = plan.decode(&[Answer::Words(words)]).expect("decoded");
        let get = |n: &str| fields.iter().find(|(f, _)| f == n).map(|(_, v)| v.clone());
        assert_eq!(get("voc_ppm"), Some(Value::F64(0.3)));
        assert_eq!(get("big_count"), Some(Value::F64(-70_000.0)));
        assert_eq!(get("u"), Some(Value::F64(65_538.0)));
        assert_eq!(get("locked"), Some(Value::Bool(true)));
        assert_eq!(get("temp_c"), Some(Value::F64(15.0)));
        assert_eq!(get("door_open"), Some(Value::Bool(true)));
        assert_eq!(
            ReadPlan::build(
                Kind::Bus,
                &[reg("passengers", Table::Input, 0, RegisterType::U16)],
                Limits::default()
            )
            .expect("plan")
            .decode(&[Answer::Words(vec![31])]),
            Ok(vec![("passengers".into(), Value::I64(31))])
        );
    }

    #[test]
    fn bad_answers_are_errors_not_panics() {
        let plan = ReadPlan::build(Kind::Kitchen, &hood(), Limits::default()).expect("plan");
        assert!(plan.decode(&[]).is_err());
        assert!(plan
            .decode(&[Answer::Bits(vec![true]), Answer::Words(vec![1, 2])])
            .is_err());
        assert!(plan
            .decode(&[Answer::Words(vec![1]), Answer::Bits(vec![true; 6])])
            .is_err());
        let nan = f32::NAN.to_bits();
        assert_eq!(
            plan.decode(&[
                Answer::Bits(vec![true]),
                Answer::Words(vec![0, 0, (nan >> 16) as u16, nan as u16, 0, 0]),
            ]),
            Err(DecodeError::NonFinite("grease_mg_m3".into()))
        );
    }

    #[test]
    fn checks_name_each_mistake() {
        let mut r = reg("fan_on", Table::Coil, 0, RegisterType::U16);
        assert!(check(&r, Some(Kind::Kitchen))
            .iter()
            .any(|m| m.contains("must be bool")));
        r.ty = RegisterType::Bool;
        assert!(check(&r, Some(Kind::Kitchen)).is_empty());
        let wrong_kind = reg("duct_temp_c", Table::Input, 0, RegisterType::Bool);
        assert!(check(&wrong_kind, Some(Kind::Kitchen))
            .iter()
            .any(|m| m.contains("a number")));
        let no_bit = reg("x", Table::Holding, 0, RegisterType::Bit);
        assert!(check(&no_bit, None)
            .iter()
            .any(|m| m.contains("needs `bit`")));
        let past = reg("x", Table::Holding, 65_535, RegisterType::F32);
        assert!(check(&past, None).iter().any(|m| m.contains("past 65535")));
        let card = reg("card_id", Table::Holding, 0, RegisterType::U16);
        assert!(check(&card, Some(Kind::Labcab))
            .iter()
            .any(|m| m.contains("a string")));
    }

    fn arb_register() -> impl Strategy<Value = RegisterConfig> {
        let table = prop_oneof![
            Just(Table::Coil),
            Just(Table::DiscreteInput),
            Just(Table::Input),
            Just(Table::Holding),
        ];
        let ty = prop_oneof![
            Just(RegisterType::U16),
            Just(RegisterType::I16),
            Just(RegisterType::U32),
            Just(RegisterType::F32),
            Just(RegisterType::Bit),
        ];
        // Addresses cluster in a few hundred so requests really get joined and split;
        // a few reach the top of the address space.
        let address = prop_oneof![4 => 0u16..600, 1 => 65_500u16..=65_534];
        (table, ty, address, 0u8..16, any::<bool>()).prop_map(
            |(table, ty, address, bit, little)| {
                let ty = if table.is_bits() {
                    RegisterType::Bool
                } else {
                    ty
                };
                RegisterConfig {
                    field: format!("f{address}"),
                    table,
                    address,
                    ty,
                    bit: (ty == RegisterType::Bit).then_some(bit),
                    word_order: if little {
                        WordOrder::Little
                    } else {
                        WordOrder::Big
                    },
                    scale: 1.0,
                    offset: 0.0,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn every_register_is_read_by_exactly_its_request(
            regs in prop::collection::vec(arb_register(), 1..80),
            max_gap in 0u16..40,
            max_registers in 2u16..=125,
            max_bits in 1u16..=2000,
        ) {
            let limits = Limits { max_gap, max_registers, max_bits };
            let plan = ReadPlan::build(Kind::Labcab, &regs, limits).expect("plan");
            let reqs = plan.requests();
            prop_assert_eq!(plan.points().len(), regs.len());
            for r in reqs {
                let max = if r.table.is_bits() { max_bits } else { max_registers };
                prop_assert!(r.count >= 1 && r.count <= max, "{:?} over {}", r, max);
                prop_assert!(r.end() <= 65_536);
                // No request reads past what it needs at either end.
                let inside: Vec<&Point> = plan.points().iter().filter(|p| reqs[p.request] == *r).collect();
                prop_assert!(inside.iter().any(|p| p.address == r.address));
                prop_assert!(inside.iter().any(|p| p.end() == r.end()));
            }
            for p in plan.points() {
                let r = reqs[p.request];
                prop_assert_eq!(r.table, p.table);
                prop_assert!(r.address <= p.address && p.end() <= r.end(), "{:?} not in {:?}", p, r);
            }
            // Requests of a table could not have been joined: too far apart or too long together.
            for w in reqs.windows(2) {
                if w[0].table == w[1].table {
                    let max = u32::from(if w[0].table.is_bits() { max_bits } else { max_registers });
                    prop_assert!(
                        u32::from(w[1].address) > w[0].end() + u32::from(max_gap)
                            || w[1].end().max(w[0].end()) - u32::from(w[0].address) > max,
                        "{:?} and {:?} could be one request", w[0], w[1]
                    );
                }
            }
            // Unused runs inside a request are at most max_gap long.
            for (i, r) in reqs.iter().enumerate() {
                let mut covered: Vec<(u32, u32)> = plan.points().iter().filter(|p| p.request == i).map(|p| (u32::from(p.address), p.end())).collect();
                covered.sort_unstable();
                let mut reach = u32::from(r.address);
                for (s, e) in covered {
                    prop_assert!(s <= reach + u32::from(max_gap));
                    reach = reach.max(e);
                }
            }
        }

        #[test]
        fn encode_then_decode_gives_the_value_back(
            raw in -30_000i32..30_000,
            little in any::<bool>(),
            ty in prop_oneof![Just(RegisterType::U32), Just(RegisterType::I32), Just(RegisterType::F32), Just(RegisterType::I16)],
        ) {
            let raw = if matches!(ty, RegisterType::U32) { raw.abs() } else { raw };
            let r = RegisterConfig {
                word_order: if little { WordOrder::Little } else { WordOrder::Big },
                scale: 0.1,
                ..reg("x", Table::Holding, 7, ty)
            };
            let plan = ReadPlan::build(Kind::Labcab, &[r], Limits::default()).expect("plan");
            let want = f64::from(raw) / 10.0;
            let Answer::Words(words) = encode(&plan.points()[0], &Value::F64(want)) else {
                panic!("registers expected");
            };
            let fields = plan.decode(&[Answer::Words(words)]).expect("decoded");
            let got = fields[0].1.as_f64().expect("number");
            prop_assert!((got - want).abs() < 1e-3, "{} != {}", got, want);
        }
    }
}
