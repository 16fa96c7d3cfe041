//! Agora AccessToken2 ("007") encoding, decoding and verification (pure, no I/O).
