//! Reading libvirt's typed parameter arrays without trusting the `virt` crate's parser
//! (which panics on a type it does not expect).

#![allow(unsafe_code)]

use std::ffi::CStr;

use virt::sys;

/// One typed parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// `VIR_TYPED_PARAM_INT`
    Int(i32),
    /// `VIR_TYPED_PARAM_UINT`
    UInt(u32),
    /// `VIR_TYPED_PARAM_LLONG`
    LLong(i64),
    /// `VIR_TYPED_PARAM_ULLONG`
    ULLong(u64),
    /// `VIR_TYPED_PARAM_DOUBLE`
    Double(f64),
    /// `VIR_TYPED_PARAM_BOOLEAN`
    Boolean(bool),
    /// `VIR_TYPED_PARAM_STRING`
    String(String),
}

impl ParamValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            ParamValue::Int(v) => u64::try_from(v).ok(),
            ParamValue::UInt(v) => Some(v.into()),
            ParamValue::LLong(v) => u64::try_from(v).ok(),
            ParamValue::ULLong(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            ParamValue::Int(v) => Some(v.into()),
            ParamValue::UInt(v) => Some(v.into()),
            ParamValue::LLong(v) => Some(v),
            ParamValue::ULLong(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// Copies `nparams` parameters starting at `params` into owned Rust values; parameters of
/// an unknown type are skipped.
///
/// # Safety
/// `params` must be NULL (with any `nparams`) or point to `nparams` initialised
/// `virTypedParameter`s that stay valid for the duration of the call.
pub(crate) unsafe fn read(
    params: *const sys::virTypedParameter,
    nparams: i32,
) -> Vec<(String, ParamValue)> {
    if params.is_null() || nparams <= 0 {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `nparams` valid elements at `params`.
    let slice = unsafe { std::slice::from_raw_parts(params, nparams as usize) };
    slice
        .iter()
        .filter_map(|param| {
            // SAFETY: libvirt NUL-terminates `field` within its 80 bytes (VIR_TYPED_PARAM_FIELD_LENGTH).
            let name = unsafe { CStr::from_ptr(param.field.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: `type_` says which union member libvirt wrote; we read only that one.
            let value = unsafe {
                match param.type_ as u32 {
                    sys::VIR_TYPED_PARAM_INT => ParamValue::Int(param.value.i),
                    sys::VIR_TYPED_PARAM_UINT => ParamValue::UInt(param.value.ui),
                    sys::VIR_TYPED_PARAM_LLONG => ParamValue::LLong(param.value.l),
                    sys::VIR_TYPED_PARAM_ULLONG => ParamValue::ULLong(param.value.ul),
                    sys::VIR_TYPED_PARAM_DOUBLE => ParamValue::Double(param.value.d),
                    sys::VIR_TYPED_PARAM_BOOLEAN => ParamValue::Boolean(param.value.b != 0),
                    sys::VIR_TYPED_PARAM_STRING if !param.value.s.is_null() => ParamValue::String(
                        CStr::from_ptr(param.value.s).to_string_lossy().into_owned(),
                    ),
                    _ => return None,
                }
            };
            Some((name, value))
        })
        .collect()
}
