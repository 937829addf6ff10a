//! The ordered key → value table of a GGUF header, and typed access to it.
//!
//! Order matters (the writer reproduces it, `inspect` shows it) and so does lookup by key
//! (lowering asks for `qwen2.block_count`), so [`Metadata`] keeps both. Its typed getters
//! absorb the disagreements between GGUF writers: one writes counts as `u32`, another as
//! `i32` or `u64`, so integer getters accept any integer type and convert with a range
//! check, and float getters accept `f32` or `f64`. A getter's error names the key and the
//! type the file actually holds.

use super::error::GgufError;
use super::value::{Array, Value};
use std::collections::HashMap;

/// Ordered metadata with lookup by key. Keys are unique.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Metadata {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends an entry; a key that is already present is an error.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<(), GgufError> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value.into()));
        Ok(())
    }

    /// Replaces the value of `key` in place, or appends it; returns the old value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        match self.index.get(&key) {
            Some(&i) => self.entries.get_mut(i).map(|e| std::mem::replace(&mut e.1, value)),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
                None
            }
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let &i = self.index.get(key)?;
        self.entries.get(i).map(|e| &e.1)
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Keys in file order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The value of `key`, or [`GgufError::MissingKey`].
    pub fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_owned() })
    }

    /// The value of `key` converted to `T` (see [`FromValue`]); missing is an error.
    pub fn get_as<T: FromValue>(&self, key: &str) -> Result<T, GgufError> {
        T::from_value(key, self.require(key)?)
    }

    /// The value of `key` converted to `T`; missing is `Ok(None)`, a wrong type still an error.
    pub fn opt_as<T: FromValue>(&self, key: &str) -> Result<Option<T>, GgufError> {
        self.get(key).map(|v| T::from_value(key, v)).transpose()
    }

    /// Any integer value that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.get_as(key)
    }

    /// Any integer value that fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_as(key)
    }

    /// Any integer value that fits in `i32`.
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        self.get_as(key)
    }

    /// Any integer value that fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.get_as(key)
    }

    /// Any integer value that fits in `usize` (counts and sizes).
    pub fn get_usize(&self, key: &str) -> Result<usize, GgufError> {
        self.get_as(key)
    }

    /// An `f32` or `f64` value as `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.get_as(key)
    }

    /// An `f32` or `f64` value as `f64`.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get_as(key)
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.get_as(key)
    }

    /// A string value, borrowed.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "string", v))
    }

    /// A string value, borrowed; missing is `Ok(None)`.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| wrong_type(key, "string", v)),
        }
    }

    /// Any array value, borrowed.
    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| wrong_type(key, "array", v))
    }

    /// An array of strings, borrowed (a tokenizer vocabulary is not copied).
    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        let v = self.require(key)?;
        match v {
            Value::Array(Array::String(s)) => Ok(s),
            other => Err(wrong_type(key, "array of string", other)),
        }
    }

    /// An array of any integer type whose elements all fit in `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        self.get_as(key)
    }

    /// An array of any integer type whose elements all fit in `u32`.
    pub fn get_u32_array(&self, key: &str) -> Result<Vec<u32>, GgufError> {
        self.get_as(key)
    }

    /// An array of any integer type whose elements all fit in `usize`.
    pub fn get_usize_array(&self, key: &str) -> Result<Vec<usize>, GgufError> {
        self.get_as(key)
    }

    /// An array of `f32` or `f64` as `f32`.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        self.get_as(key)
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Metadata {
    /// Collects entries; a repeated key keeps its first position and its last value.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        for (k, v) in iter {
            m.set(k, v);
        }
        m
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType { key: key.to_owned(), expected, found: found.type_description() }
}

/// Conversion from a metadata value, used by [`Metadata::get_as`].
pub trait FromValue: Sized {
    /// Converts `value`, the value of `key`; errors name the key.
    fn from_value(key: &str, value: &Value) -> Result<Self, GgufError>;
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(key: &str, value: &Value) -> Result<Self, GgufError> {
                let wide = value.as_i128().ok_or_else(|| wrong_type(key, "integer", value))?;
                <$t>::try_from(wide).map_err(|_| GgufError::OutOfRange {
                    key: key.to_owned(),
                    value: wide.to_string(),
                    target: stringify!($t),
                })
            }
        }

        impl FromValue for Vec<$t> {
            fn from_value(key: &str, value: &Value) -> Result<Self, GgufError> {
                let arr = match value {
                    Value::Array(a) if a.is_integer() => a,
                    other => return Err(wrong_type(key, "array of integer", other)),
                };
                (0..arr.len())
                    .map(|i| {
                        let wide = arr.int_at(i).unwrap_or_default();
                        <$t>::try_from(wide).map_err(|_| GgufError::OutOfRange {
                            key: format!("{key}[{i}]"),
                            value: wide.to_string(),
                            target: stringify!($t),
                        })
                    })
                    .collect()
            }
        }
    )*};
}

int_from_value!(u8, i8, u16, i16, u32, i32, u64, i64, usize);

impl FromValue for f64 {
    fn from_value(key: &str, value: &Value) -> Result<Self, GgufError> {
        match *value {
            Value::F32(v) => Ok(f64::from(v)),
            Value::F64(v) => Ok(v),
            _ => Err(wrong_type(key, "f32 or f64", value)),
        }
    }
}

/// Narrows an `f64` to `f32`, refusing finite values that would become infinite.
fn narrow(key: &str, v: f64) -> Result<f32, GgufError> {
    #[allow(clippy::cast_possible_truncation)]
    let n = v as f32;
    if n.is_infinite() && v.is_finite() {
        return Err(GgufError::OutOfRange { key: key.to_owned(), value: v.to_string(), target: "f32" });
    }
    Ok(n)
}

impl FromValue for f32 {
    fn from_value(key: &str, value: &Value) -> Result<Self, GgufError> {
        match *value {
            Value::F32(v) => Ok(v),
            Value::F64(v) => narrow(key, v),
            _ => Err(wrong_type(key, "f32 or f64", value)),
        }
    }
}

impl FromValue for Vec<f32> {
    fn from_value(key: &str, value: &Value) -> Result<Self, GgufError> {
        match value {
            Value::Array(Array::F32(v)) => Ok(v.clone()),
            Value::Array(Array::F64(v)) => {
                v.iter().enumerate().map(|(i, &x)| narrow(&format!("{key}[{i}]"), x)).collect()
            }
            other => Err(wrong_type(key, "array of f32 or f64", other)),
        }
    }
}

impl FromValue for Vec<f64> {
    fn from_value(key: &str, value: &Value) -> Result<Self, GgufError> {
        match value {
            Value::Array(Array::F32(v)) => Ok(v.iter().map(|&x| f64::from(x)).collect()),
            Value::Array(Array::F64(v)) => Ok(v.clone()),
            other => Err(wrong_type(key, "array of f32 or f64", other)),
        }
    }
}

impl FromValue for bool {
    fn from_value(key: &str, value: &Value) -> Result<Self, GgufError> {
        match *value {
            Value::Bool(b) => Ok(b),
            _ => Err(wrong_type(key, "bool", value)),
        }
    }
}

impl FromValue for Vec<bool> {
    fn from_value(key: &str, value: &Value) -> Result<Self, GgufError> {
        match value {
            Value::Array(Array::Bool(v)) => Ok(v.clone()),
            other => Err(wrong_type(key, "array of bool", other)),
        }
    }
}

impl FromValue for String {
    fn from_value(key: &str, value: &Value) -> Result<Self, GgufError> {
        value.as_str().map(str::to_owned).ok_or_else(|| wrong_type(key, "string", value))
    }
}

impl FromValue for Vec<String> {
    fn from_value(key: &str, value: &Value) -> Result<Self, GgufError> {
        match value {
            Value::Array(Array::String(v)) => Ok(v.clone()),
            other => Err(wrong_type(key, "array of string", other)),
        }
    }
}

impl FromValue for Value {
    fn from_value(_key: &str, value: &Value) -> Result<Self, GgufError> {
        Ok(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_convert_across_widths() {
        let mut m = Metadata::new();
        m.push("a", 7i32).unwrap();
        m.push("b", -1i64).unwrap();
        m.push("c", u64::MAX).unwrap();
        m.push("f", 1.5f64).unwrap();
        m.push("ids", vec![1u64, 2, 3]).unwrap();
        assert_eq!(m.get_u32("a").unwrap(), 7);
        assert_eq!(m.get_usize("a").unwrap(), 7);
        let e = m.get_u32("b").unwrap_err().to_string();
        assert!(e.contains("b") && e.contains("-1") && e.contains("u32"), "{e}");
        assert!(m.get_i64("c").is_err());
        assert_eq!(m.get_f32("f").unwrap(), 1.5);
        assert_eq!(m.get_i32_array("ids").unwrap(), vec![1, 2, 3]);
        let e = m.get_str("a").unwrap_err().to_string();
        assert!(e.contains("has type i32, expected string"), "{e}");
        assert!(m.get_u32("nope").unwrap_err().to_string().contains("nope is missing"));
        assert_eq!(m.opt_as::<u32>("nope").unwrap(), None);
        assert!(m.push("a", 1u8).is_err());
        assert_eq!(m.set("a", 9u8), Some(Value::I32(7)));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b", "c", "f", "ids"]);
    }
}
