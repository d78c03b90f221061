//! The shape of a TLS server's first flight (parsed by
//! `wire::faketls::server_shape`) and names for what it shows.

pub(super) use wire::faketls::server_shape::{
    client_session_id, server_shape, ServerShape, KEY_SHARE, SUPPORTED_VERSIONS,
};

/// A name for an extension type.
pub(super) fn extension_name(t: u16) -> String {
    match t {
        KEY_SHARE => "key_share".into(),
        SUPPORTED_VERSIONS => "supported_versions".into(),
        0x29 => "pre_shared_key".into(),
        t => format!("0x{t:04x}"),
    }
}
