//! `AsyncRead`/`AsyncWrite` for wrappers that pass a direction through to
//! one of their fields unchanged: the three `poll_*` methods of a write
//! side are the same few lines for every wrapper, so they are written once.
//!
//! ```ignore
//! samizdat::delegate_async_write!([S: AsyncWrite + Unpin] Prefixed<S>, inner);
//! samizdat::delegate_async_read!([] Carrier, io);
//! ```

/// Implements `tokio::io::AsyncWrite` for `$ty` by calling `$field`'s.
/// The generics and their bounds go in the brackets.
#[macro_export]
macro_rules! delegate_async_write {
    ([$($gen:tt)*] $ty:ty, $field:ident) => {
        impl<$($gen)*> ::tokio::io::AsyncWrite for $ty {
            fn poll_write(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.$field).poll_write(cx, buf)
            }
            fn poll_flush(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.$field).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.$field).poll_shutdown(cx)
            }
        }
    };
}

/// Implements `tokio::io::AsyncRead` for `$ty` by calling `$field`'s.
#[macro_export]
macro_rules! delegate_async_read {
    ([$($gen:tt)*] $ty:ty, $field:ident) => {
        impl<$($gen)*> ::tokio::io::AsyncRead for $ty {
            fn poll_read(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut ::tokio::io::ReadBuf<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.$field).poll_read(cx, buf)
            }
        }
    };
}
