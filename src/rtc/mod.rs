//! RTC tokens: the Agora AccessToken2 ("007") codec and token issuance for stream
//! channels.

pub mod accesstoken2;
pub mod service;
mod zlib_compat;

pub use service::RtcIssuer;
