//! The Graph emulator: a faithful stand-in for Microsoft Graph and the Entra token endpoint.
