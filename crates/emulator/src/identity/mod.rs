//! The Microsoft identity platform v2.0 stand-in: `/{tenant}/oauth2/v2.0/authorize` and
//! `/{tenant}/oauth2/v2.0/token`, laid out like the protocol. It must not serve Graph.

pub(crate) mod authorize;
pub(crate) mod error;
pub(crate) mod params;
pub(crate) mod pkce;
pub(crate) mod redirect_uri;
pub(crate) mod scope;
pub(crate) mod tenant;
pub(crate) mod token;
