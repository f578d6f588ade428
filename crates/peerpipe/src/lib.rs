//! peerpipe
