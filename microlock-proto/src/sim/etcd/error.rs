//! etcd's v2 errors (`v2error`): the codes the model answers, their messages and HTTP
//! statuses, and the JSON error body.

use http::Response;

use super::json::json_str;
use super::net_http::json_response;

pub(super) const E_KEY_NOT_FOUND: u32 = 100;
pub(super) const E_TEST_FAILED: u32 = 101;
pub(super) const E_NOT_FILE: u32 = 102;
pub(super) const E_NOT_DIR: u32 = 104;
pub(super) const E_NODE_EXIST: u32 = 105;
pub(super) const E_ROOT_RONLY: u32 = 107;
pub(super) const E_DIR_NOT_EMPTY: u32 = 108;
pub(super) const E_PREV_VALUE_REQUIRED: u32 = 201;
pub(super) const E_TTL_NAN: u32 = 202;
pub(super) const E_INDEX_NAN: u32 = 203;
pub(super) const E_INVALID_FIELD: u32 = 209;
pub(super) const E_INVALID_FORM: u32 = 210;
pub(super) const E_REFRESH_VALUE: u32 = 211;
pub(super) const E_REFRESH_TTL_REQUIRED: u32 = 212;
pub(super) const E_RAFT_INTERNAL: u32 = 300;
pub(super) const E_EVENT_INDEX_CLEARED: u32 = 401;

#[derive(Debug)]
pub(super) struct EtcdError {
    pub(super) code: u32,
    pub(super) cause: Vec<u8>,
    pub(super) index: u64,
}

impl EtcdError {
    pub(super) fn new(code: u32, cause: impl Into<Vec<u8>>, index: u64) -> EtcdError {
        EtcdError {
            code,
            cause: cause.into(),
            index,
        }
    }

    pub(super) fn message(&self) -> &'static str {
        match self.code {
            100 => "Key not found",
            101 => "Compare failed",
            102 => "Not a file",
            104 => "Not a directory",
            105 => "Key already exists",
            107 => "Root is read only",
            108 => "Directory not empty",
            201 => "PrevValue is Required in POST form",
            202 => "The given TTL in POST form is not a number",
            203 => "The given index in POST form is not a number",
            209 => "Invalid field",
            210 => "Invalid POST form",
            211 => "Value provided on refresh",
            212 => "A TTL must be provided on refresh",
            300 => "Raft Internal Error",
            401 => "The event in requested index is outdated and cleared",
            _ => "",
        }
    }

    fn status(&self) -> u16 {
        match self.code {
            100 => 404,
            101 | 105 => 412,
            102 | 108 => 403,
            110 => 401,
            300 | 301 => 500,
            _ => 400,
        }
    }

    pub(super) fn response(&self) -> Response<Vec<u8>> {
        let mut body = format!("{{\"errorCode\":{},\"message\":", self.code).into_bytes();
        json_str(&mut body, self.message().as_bytes());
        if !self.cause.is_empty() {
            body.extend_from_slice(b",\"cause\":");
            json_str(&mut body, &self.cause);
        }
        body.extend_from_slice(format!(",\"index\":{}}}\n", self.index).as_bytes());
        json_response(self.status(), self.index, body)
    }
}
