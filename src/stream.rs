//! One type for a byte stream that may or may not be wrapped in TLS, so the
//! doors and the upstream side handle plaintext and TLS connections alike.

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream (TCP, or TLS over TCP).
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ByteStream for T {}

pub type BoxedStream = Box<dyn ByteStream>;
