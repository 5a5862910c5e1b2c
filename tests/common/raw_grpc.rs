//! gRPC calls whose messages are raw bytes: the tests that send what the real types cannot
//! express (bad protobuf, non-UTF-8 ids, arbitrary field numbers) or share one encoded request
//! between many calls without copying it. Included with `#[path]` by the tests that use it.
#![allow(dead_code)]

use aelabel::client::Connection;
use prost::bytes::{Buf, BufMut, Bytes};
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Status;

/// A codec that sends and receives message bodies as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

/// A `Labeller` method, by how it is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Unary `Encode`.
    Encode,
    /// Unary `Reconstruct`.
    Reconstruct,
    /// Unary `Label`.
    Label,
    /// Bidirectional `LabelStream`.
    LabelStream,
}

impl Method {
    /// Every method that takes images.
    pub const ALL: [Method; 4] = [
        Method::Encode,
        Method::Reconstruct,
        Method::Label,
        Method::LabelStream,
    ];
    /// The unary methods that take images.
    pub const UNARY: [Method; 3] = [Method::Encode, Method::Reconstruct, Method::Label];

    fn path(self) -> PathAndQuery {
        PathAndQuery::from_static(match self {
            Method::Encode => "/aelabel.v1.Labeller/Encode",
            Method::Reconstruct => "/aelabel.v1.Labeller/Reconstruct",
            Method::Label => "/aelabel.v1.Labeller/Label",
            Method::LabelStream => "/aelabel.v1.Labeller/LabelStream",
        })
    }
}

/// A raw-bytes client for the `Labeller` paths, on one connection.
#[derive(Clone)]
pub struct RawClient {
    grpc: tonic::client::Grpc<Connection>,
}

/// How a `LabelStream` call ended: the responses before the end, and the status it ended with.
#[derive(Debug)]
pub struct StreamOutcome {
    /// Responses received.
    pub responses: usize,
    /// `Ok` when the stream ended cleanly.
    pub end: Result<(), Status>,
}

impl RawClient {
    /// A client on `channel` that accepts answers of any size.
    pub fn new(channel: Connection) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX),
        }
    }

    /// Sends `body` as the whole request of a unary `method`.
    pub async fn unary(&mut self, method: Method, body: Bytes) -> Result<Bytes, Status> {
        assert_ne!(method, Method::LabelStream, "use stream()");
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        self.grpc
            .unary(tonic::Request::new(body), method.path(), BytesCodec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Sends `messages` on one `LabelStream` and reads until the stream ends, or `limit`
    /// passes (a test failure: the server must end every stream it refuses).
    pub async fn stream(&mut self, messages: Vec<Bytes>, limit: Duration) -> StreamOutcome {
        let call = async {
            self.grpc
                .ready()
                .await
                .map_err(|e| (0, Status::unavailable(e.to_string())))?;
            let mut inbound = self
                .grpc
                .streaming(
                    tonic::Request::new(tokio_stream::iter(messages)),
                    Method::LabelStream.path(),
                    BytesCodec,
                )
                .await
                .map_err(|status| (0, status))?
                .into_inner();
            let mut responses = 0;
            loop {
                match inbound.message().await {
                    Ok(Some(_)) => responses += 1,
                    Ok(None) => return Ok(responses),
                    Err(status) => return Err((responses, status)),
                }
            }
        };
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(responses)) => StreamOutcome {
                responses,
                end: Ok(()),
            },
            Ok(Err((responses, status))) => StreamOutcome {
                responses,
                end: Err(status),
            },
            Err(_) => panic!("LabelStream did not end within {limit:?}"),
        }
    }

    /// Sends `body` on `method`; a stream carries it as its only message. The status the
    /// call ended with (`Ok` carries no response).
    pub async fn call(&mut self, method: Method, body: Bytes) -> Result<(), Status> {
        match method {
            Method::LabelStream => self.stream(vec![body], Duration::from_secs(30)).await.end,
            unary => self.unary(unary, body).await.map(drop),
        }
    }
}
