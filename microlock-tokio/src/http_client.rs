//! Moves one `http::Request<Vec<u8>>` to etcd and one `http::Response<Vec<u8>>` back.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use microlock_proto::driver::Failure;
use microlock_proto::http::{Request, Response};
use microlock_proto::MAX_RESPONSE_BYTES;

/// hyper's pooled keep-alive HTTP/1.1 client.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient(Client<HttpConnector, Full<Bytes>>);

impl HttpClient {
    pub(crate) fn new() -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        HttpClient(Client::builder(TokioExecutor::new()).build(connector))
    }

    /// Sends `request` and reads the body, stopping one byte past the machine's bound (the
    /// machine rejects the oversized body). `Err` says whether the request could have reached
    /// etcd (a failure to connect could not).
    pub(crate) async fn send(
        &self,
        request: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, Failure> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(Bytes::from(body)));
        let response = self.0.request(request).await.map_err(|e| {
            if e.is_connect() {
                Failure::Connect(describe(&e))
            } else {
                Failure::Lost(describe(&e))
            }
        })?;
        let (parts, mut body) = response.into_parts();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::Lost(describe(&e)))?;
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
                if bytes.len() > MAX_RESPONSE_BYTES {
                    bytes.truncate(MAX_RESPONSE_BYTES + 1);
                    break;
                }
            }
        }
        Ok(Response::from_parts(parts, bytes))
    }
}

/// An error and its chain of causes, on one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
