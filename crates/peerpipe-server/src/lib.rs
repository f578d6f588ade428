//! peerpipe-server
